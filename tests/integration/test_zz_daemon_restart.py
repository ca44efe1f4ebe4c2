"""A REAL daemon restart, then `labgpu boot`. Named test_zz_* so that it runs after the other integration
tests: `lxd shutdown` / `incus admin shutdown` stops every instance on the daemon (other tests' too) and
the daemon starts the ones that were running again when it comes back.

It runs where nothing else shares the daemons (scripts/test and CI set LABGPU_REQUIRE_DAEMONS=1), or when
asked for with LABGPU_TEST_DAEMON_RESTART=1; otherwise it is skipped so that it does not pull the daemon
away from under other people's test runs on a shared development machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labgpu.services.members._ssh import wait_for_ssh
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.sshutil import make_key

# serial: the restart stops every container on the daemon, other tests' too (scripts/test runs it after the
# parallel part, alone).
pytestmark = [pytest.mark.integration, pytest.mark.serial]

LABGPU = [sys.executable, "-m", "labgpu.cli"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def restart_allowed() -> None:
    if (
        os.environ.get("LABGPU_TEST_DAEMON_RESTART") != "1"
        and os.environ.get("LABGPU_REQUIRE_DAEMONS") != "1"
    ):
        pytest.skip("restarts the shared daemon: set LABGPU_TEST_DAEMON_RESTART=1 (scripts/test does)")


def _shutdown(kind: str, pid: int) -> None:
    """A clean daemon shutdown; where it does not end in time, the host's init kills the daemon (as systemd
    does after its stop timeout). LXD 5.0 waits for every running operation, and an exec whose client never
    came (a killed program's) runs forever: the daemon then stays "shutting down", refusing every change."""
    command = (
        ["lxd", "shutdown", "--timeout", "120"]
        if kind == "lxd"
        else ["incus", "admin", "shutdown", "--timeout", "120"]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 and Path(f"/proc/{pid}").exists():
        print(f"{kind} did not shut down ({(done.stderr or done.stdout).strip()}): killed, as an init would")
        os.kill(pid, signal.SIGKILL)


def test_daemon_restart_then_boot_brings_containers_back_with_port_maps(
    restart_allowed: None, labgpu_env: LabgpuEnv, daemon_kind: str, tmp_path: Path
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    svc = labgpu_env.services()
    name = unique_name("rs")
    key = make_key(tmp_path, "k")
    sheet = add_member(svc, validate_request(svc, name=name, ssh_keys=[Path(f"{key}.pub").read_text()]))
    port = sheet.ports["ssh"]
    # Drift the daemon will not repair by itself: the port map is gone.
    svc.runtime.instances.remove_device(sheet.container, "labgpu-ssh")

    started = time.monotonic()
    _shutdown(daemon_kind, int(svc.runtime.server(refresh=True).raw["environment"]["server_pid"]))
    # labgpu boot is started before the daemon is back, as systemd may do: it waits for it.
    boot = subprocess.Popen(
        [*LABGPU, "boot", "--timeout", "180", "--json"],
        env=labgpu_env.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    up = subprocess.run(
        [str(ROOT / "scripts" / "start-daemons"), daemon_kind], capture_output=True, text=True, timeout=300
    )
    assert up.returncode == 0, up.stdout + up.stderr
    out, err = boot.communicate(timeout=600)
    assert boot.returncode == 0, out + err
    report = json.loads(out)
    print(
        f"{daemon_kind}: restart and boot took {time.monotonic() - started:.1f}s; boot waited "
        f"{report['waited_seconds']}s for the daemon; actions: "
        f"{[(a['member'], a['action']) for a in report['reconcile']['actions'] if a['done']]}"
    )

    svc.runtime.close()
    inst = svc.runtime.instances.get(sheet.container)
    assert inst.status == "Running"
    assert inst.devices["labgpu-ssh"]["listen"] == f"tcp:127.0.0.1:{port}"
    wait_for_ssh("127.0.0.1", port, timeout=120)
