"""SIGKILL after each step of `member move`, between standalone hosts (s1 -> s2: a copy between daemons)
and between cluster members (c2 -> c1: the cluster moves it), on labgpu's own test daemons
(scripts/start-test-cluster). `labgpu reconcile` finishes or rolls back the move; then the invariants:
exactly one container, on the host the store says, home marker intact, nothing left to repair."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._records import home_dir
from tests.conftest import unique_name
from tests.integration.multihost.conftest import HostsEnv, add_test_hosts
from tests.reliability.conftest import Fault
from tests.reliability.harness import CLUSTER_MOVE_STEPS, MOVE_STEPS, run_labgpu, steps, write_marker

pytestmark = pytest.mark.integration


def _killed_move(hosts_env: HostsEnv, fault: Fault, source: str, to: str, step: str) -> None:
    svc = hosts_env.services()
    add_test_hosts(hosts_env, svc, s2_by_socket=False)
    name = unique_name("fv")
    add_member(svc, validate_request(svc, name=name, host=source), wait_ssh=False)
    marker = write_marker(home_dir(svc, name), f"move killed after {step}")
    fault.killed(run_labgpu(hosts_env.env(), "member", "move", name, "--to", to, kill_after=step))
    report = fault.recover(run_labgpu(hosts_env.env(), "reconcile", "--json"))
    assert not report.get("failed"), report
    fault.check(hosts_env.services(), markers={name: marker}, owners={name})
    assert Path(home_dir(svc, name), marker.path).read_text() == marker.content


@pytest.mark.scenario("move-standalone")
@pytest.mark.parametrize("step", steps("move-standalone", MOVE_STEPS))
def test_standalone_move_killed(hosts_env: HostsEnv, fault: Fault, step: str) -> None:
    _killed_move(hosts_env, fault, "s1", "s2", step)


@pytest.mark.scenario("move-cluster")
@pytest.mark.parametrize("step", steps("move-cluster", CLUSTER_MOVE_STEPS))
def test_cluster_move_killed(hosts_env: HostsEnv, fault: Fault, step: str) -> None:
    _killed_move(hosts_env, fault, "c2", "c1", step)
