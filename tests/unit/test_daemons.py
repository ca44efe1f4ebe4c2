"""How labgpu restarts an LXD/Incus daemon (labgpu.system.daemons): by the way it runs, read from /proc.
The real restarts were tested in tests/integration/test_zz_reboot.py (removed from the suite for now: in CI it left the
shared daemons restarting under the serial tests that followed; see CHANGELOG)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

from labgpu.errors import ConfigError
from labgpu.system.daemons import DaemonProcess, _unit_of, read_process, restart_method


def process(unit: str | None) -> DaemonProcess:
    return DaemonProcess(
        pid=1, argv=["lxd"], exe="/usr/bin/lxd", env={}, unit=unit, stdout=None, same_netns=True
    )


def test_the_unit_comes_from_the_process_cgroup() -> None:
    assert _unit_of("0::/system.slice/snap.lxd.daemon.service\n") == "snap.lxd.daemon.service"
    assert (
        _unit_of("12:pids:/system.slice/incus.service\n0::/system.slice/incus.service\n") == "incus.service"
    )
    assert _unit_of("0::/\n") is None
    assert _unit_of("0::/user.slice/user-0.slice/session-3.scope\n") is None


def test_each_installation_is_restarted_its_own_way() -> None:
    snap = restart_method("lxd", process("snap.lxd.daemon.service"), systemd=True)
    assert snap == ["systemctl", "reload", "snap.lxd.daemon.service"]
    assert restart_method("lxd", process("lxd.service"), systemd=True) == [
        "systemctl",
        "restart",
        "lxd.service",
    ]
    assert restart_method("incus", process("incus.service"), systemd=True) == [
        "systemctl", "restart", "incus.service",
    ]  # fmt: skip
    # Started by hand (a shell's session, no unit of its own), or no systemd at all: SIGTERM and start again.
    assert restart_method("lxd", process("session-3.scope"), systemd=True) is None
    assert restart_method("lxd", process("lxd.service"), systemd=False) is None


def test_a_process_is_read_from_proc() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", "marker"],
        env={**os.environ, "LABGPU_MARK": "yes"},
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:  # between fork and exec /proc shows the parent's command line, or none
            with contextlib.suppress(ConfigError):
                found = read_process(child.pid)
                if found.argv[-1] == "marker":
                    break
            assert time.monotonic() < deadline, "the child never showed its command line"
            time.sleep(0.05)
        assert found.argv[-1] == "marker" and found.env["LABGPU_MARK"] == "yes"
        assert found.exe and os.path.exists(found.exe)
        assert found.same_netns
    finally:
        child.kill()
        child.wait()
