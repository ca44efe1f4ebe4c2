"""Restarting the LXD/Incus daemon after `host init` changed /etc/subuid or /etc/subgid.

A daemon reads those files when it starts only: until it restarts, it refuses to map a member's home
("not allowed"). `host init` restarts it itself, keeping the instances running (see
:mod:`labgpu.system.daemons` for how each installation is restarted), and waits for its API; where it
cannot, it says exactly why and what to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labgpu.errors import LabgpuError
from labgpu.runtime.client import RuntimeClient, ServerInfo
from labgpu.system import daemons

DAEMON_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class RestartOutcome:
    restarted: bool
    detail: str  # how it was restarted, or why it was not and what to run


def daemon_restart_hint(server: ServerInfo) -> str:
    """What an admin runs to restart the daemon by hand, keeping instances running."""
    if server.kind == "incus":
        return "systemctl restart incus, or without systemd: kill -TERM the incusd process and start it again"
    return (
        "systemctl restart lxd (the snap: systemctl reload snap.lxd.daemon), or without systemd: kill -TERM "
        "the lxd process and start it again"
    )


def reads_files(written: list[Path]) -> bool:
    """Whether ``written`` are the files the daemon reads (tests write copies elsewhere)."""
    return any(p.resolve() in DAEMON_FILES for p in written)


def restart_for_subid(runtime: RuntimeClient, server: ServerInfo) -> RestartOutcome:
    """Restart the daemon behind ``runtime`` so it reads the new ranges, then wait until it answers again
    (up to three minutes). Never raises: what went wrong is in the outcome."""
    name = "incusd" if server.kind == "incus" else "lxd"
    if runtime.endpoint.socket_path is None:
        return RestartOutcome(
            False,
            f"the daemon is reached over the network ({runtime.endpoint.describe()}): labgpu restarts only a "
            f"daemon on this machine; restart {name} on its own host ({daemon_restart_hint(server)})",
        )
    pid = server.raw.get("environment", {}).get("server_pid")
    if not isinstance(pid, int) or pid <= 0:
        return RestartOutcome(
            False,
            f"the daemon does not say its process id; restart it by hand: {daemon_restart_hint(server)}",
        )
    try:
        how = daemons.restart_daemon(server.kind, pid)
    except LabgpuError as exc:
        fix = exc.hint or daemon_restart_hint(server)
        return RestartOutcome(False, f"cannot restart {name}: {exc.message}; {fix}")

    def answers() -> bool:
        try:
            runtime.close()
            new = runtime.server(refresh=True, timeout=5)
        except LabgpuError:
            return False
        return bool(new.raw.get("environment", {}).get("server_pid") != pid)

    if not daemons.wait_until(answers, READY_TIMEOUT):
        return RestartOutcome(
            False,
            f"{name} was restarted ({how}) but did not answer within {READY_TIMEOUT:g}s: see its log, then run "
            "labgpu host init again",
        )
    return RestartOutcome(True, f"restarted ({how}) to read the new ranges; its instances kept running")
