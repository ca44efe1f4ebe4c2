"""SIGKILL after each step of `member add`, `member reset` and `member rm`, on LXD and on Incus; then
`labgpu reconcile`, then the invariants (one container, ports once, home and its marker intact, nothing
left to repair). A removed member's home must be in the archive (rm never purges unless asked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.ops._invariants import Marker
from tests.conftest import LabgpuEnv, unique_name
from tests.reliability.conftest import Fault
from tests.reliability.harness import ADD_STEPS, RESET_STEPS, RM_STEPS, run_labgpu, steps, write_marker

pytestmark = pytest.mark.integration


def _home(env: LabgpuEnv, name: str) -> Path:
    return Path(env.overrides["home_base"]) / name


def _member(env: LabgpuEnv, what: str) -> tuple[str, dict[str, Marker]]:
    """A provisioned member with a marker file in their home."""
    svc = env.services()
    name = unique_name("fm")
    add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    return name, {name: write_marker(_home(env, name), what)}


def _reconcile(env: LabgpuEnv, fault: Fault) -> dict[str, object]:
    return fault.recover(run_labgpu(env.env(), "reconcile", "--json"))


@pytest.mark.scenario("add")
@pytest.mark.parametrize("step", steps("add", ADD_STEPS))
def test_member_add_killed(labgpu_env: LabgpuEnv, fault: Fault, step: str) -> None:
    name = unique_name("fa")
    fault.killed(run_labgpu(labgpu_env.env(), "member", "add", name, "--json", kill_after=step))
    markers = {}
    if _home(labgpu_env, name).is_dir():  # what the member may already have written must survive
        markers[name] = write_marker(_home(labgpu_env, name), f"add killed after {step}")
    _reconcile(labgpu_env, fault)
    fault.check(labgpu_env.services(), markers=markers, owners={name})


@pytest.mark.scenario("reset")
@pytest.mark.parametrize("step", steps("reset", RESET_STEPS))
def test_member_reset_killed(labgpu_env: LabgpuEnv, fault: Fault, step: str) -> None:
    name, markers = _member(labgpu_env, f"reset killed after {step}")
    fault.killed(run_labgpu(labgpu_env.env(), "member", "reset", name, "--yes", "--json", kill_after=step))
    _reconcile(labgpu_env, fault)
    fault.check(labgpu_env.services(), markers=markers, owners={name})


@pytest.mark.scenario("rm")
@pytest.mark.parametrize("step", steps("rm", RM_STEPS))
def test_member_rm_killed(labgpu_env: LabgpuEnv, fault: Fault, step: str) -> None:
    name, markers = _member(labgpu_env, f"rm killed after {step}")
    fault.killed(run_labgpu(labgpu_env.env(), "member", "rm", name, "--yes", "--json", kill_after=step))
    _reconcile(labgpu_env, fault)
    svc = labgpu_env.services()
    fault.check(svc, markers=markers, owners={name})
    # Finished: the member is gone, and their home is in the archive (never purged unasked).
    r = run_labgpu(labgpu_env.env(), "member", "show", name)
    assert r.returncode == 2 and not _home(labgpu_env, name).exists(), r.stdout + r.stderr
    assert list(Path(labgpu_env.overrides["home_archive"]).glob(f"{name}-*/fault-marker.txt"))
