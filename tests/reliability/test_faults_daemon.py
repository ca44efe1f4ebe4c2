"""The runtime daemon restarted in the middle of `member add`: labgpu's own standalone Incus daemon f1
(scripts/start-test-cluster start f1; never the shared ones) is shut down and started again while the
add is paused right after a step; the add then goes on (it may fail with a clear error), `labgpu
reconcile` finishes what is left, and every invariant holds."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.store.models import Member
from tests.conftest import (
    TEST_IMAGE_ALIASES,
    TEST_PROFILE,
    Cleanup,
    LabgpuEnv,
    _ensure_test_image,
    _require,
    _socket_ok,
    unique_name,
)
from tests.integration.multihost.conftest import HOSTS_DIR, ensure_default_pool_profile
from tests.reliability.conftest import Fault
from tests.reliability.harness import LABGPU, run_labgpu, steps, write_marker

# One lane (tests/lanes.py) for the module: each test restarts f1.
pytestmark = [pytest.mark.integration, pytest.mark.lane("f1")]

ROOT = Path(__file__).resolve().parents[2]
F1_DIR = HOSTS_DIR / "incus-f1"
F1_ADDRESS = "10.231.0.15"


@pytest.fixture(scope="module")
def f1() -> Iterator[RuntimeClient]:
    sock = F1_DIR / "unix.socket"
    if not _socket_ok(sock):
        _require(
            f"the fault suite's daemon f1 ({sock}) is not running; run scripts/start-test-cluster start f1"
        )
    client = RuntimeClient(Endpoint.unix(sock), timeout=30, operation_timeout=300)
    _ensure_test_image(client, "ssh")
    ensure_default_pool_profile(client)
    yield client
    client.close()


@pytest.fixture
def f1_env(f1: RuntimeClient, tmp_path: Path) -> Iterator[LabgpuEnv]:
    start = 45000 + secrets.randbelow(100) * 100
    env = LabgpuEnv(
        overrides={
            "state_dir": str(tmp_path / "state"),
            "home_base": str(tmp_path / "home"),
            "home_archive": str(tmp_path / "archive"),
            "runtime_url": f"unix://{F1_DIR / 'unix.socket'}",
            "listen_address": F1_ADDRESS,  # inside f1's network namespace, reachable from here
            "port_range_start": str(start),
            "port_range_end": str(start + 99),
            "default_template": TEST_IMAGE_ALIASES["ssh"],
            "profile_name": TEST_PROFILE,
            "storage_pool": "default",
            "ssh_ready_timeout": "180",
        },
        runtime=f1,
    )
    yield env
    cleanup = Cleanup(f1)
    svc = env.services()
    with svc.session() as session:
        for name in session.scalars(select(Member.container)):
            if name:
                cleanup.instance(name)
    cleanup.run()


def restart_f1() -> None:
    env = dict(os.environ, INCUS_DIR=str(F1_DIR))
    subprocess.run(
        ["incus", "admin", "shutdown", "--timeout", "120"], env=env, capture_output=True, timeout=300
    )
    up = subprocess.run(
        [str(ROOT / "scripts" / "start-test-cluster"), "start", "f1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert up.returncode == 0, up.stdout + up.stderr


@pytest.mark.scenario("daemon-restart")
@pytest.mark.parametrize("step", steps("daemon-restart", ["home", "container", "running"]))
def test_daemon_restarted_during_member_add(
    f1_env: LabgpuEnv, tmp_path: Path, fault: Fault, step: str
) -> None:
    name = unique_name("fr")
    pause = tmp_path / "paused"
    environ = {**f1_env.env(), "LABGPU_FAULT_PAUSE_AFTER": step, "LABGPU_FAULT_PAUSE_FILE": str(pause)}
    add = subprocess.Popen(
        [*LABGPU, "member", "add", name, "--json"], env=environ, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not pause.exists():
        assert add.poll() is None, add.communicate()
        assert time.monotonic() < deadline, "member add did not reach the step"
        time.sleep(0.1)
    marker = write_marker(Path(f1_env.overrides["home_base"]) / name, f"daemon restarted after {step}")
    restart_f1()
    fault.inject()
    pause.unlink()
    out, err = add.communicate(timeout=600)
    # Either the add rides over the restart, or it fails with one clear line (never a traceback).
    assert add.returncode in (0, 1), (add.returncode, out, err)
    assert "Traceback" not in err, err
    print(f"member add across the restart after {step}: exit {add.returncode} {err.strip()[-300:]}")
    fault.recover(run_labgpu(f1_env.env(), "reconcile", "--json"))
    fault.check(f1_env.services(), markers={name: marker}, owners={name})
