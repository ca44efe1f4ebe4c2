"""The LXD/Incus daemon as a host process: start it where nothing runs it, restart it the way it runs.

How a daemon is restarted depends on how it was installed and started, and every way here keeps the
instances running (the daemons leave them running on SIGTERM, and their units stop only the main process:
``KillMode=process``):

- the LXD snap: ``systemctl reload snap.lxd.daemon`` (LXD's documented restart that keeps instances);
- a systemd unit (Debian's ``lxd.service``, Incus' ``incus.service``, from the process's own cgroup):
  ``systemctl restart UNIT``;
- no systemd (a container, these development machines): SIGTERM, then the same program with the same
  arguments and environment, from ``/`` in a new session, its output appended where it went before.

What cannot be restarted from here (another network namespace, not root) raises ConfigError saying why
and what to run instead. The caller waits for the daemon's API to answer again.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labgpu.errors import ConfigError

PROC = Path("/proc")
STOP_TIMEOUT = 120.0
DEFAULT_LOG_DIR = Path("/var/log/labgpu")
# What starts a daemon where systemd runs it (the socket activates the service) and where it does not.
SYSTEMD_START = {"lxd": ["lxd.socket", "lxd.service"], "incus": ["incus.socket", "incus.service"]}
SNAP_LXD_UNIT = "snap.lxd.daemon.service"
INCUSD = Path("/usr/libexec/incus/incusd")


def systemd_running() -> bool:
    """Whether systemd is PID 1 (it is not in containers and on these development machines)."""
    return Path("/run/systemd/system").is_dir()


@dataclass(frozen=True)
class DaemonProcess:
    """A running daemon, as /proc shows it."""

    pid: int
    argv: list[str]
    exe: str  # the program's path ("" when /proc does not say)
    env: dict[str, str]
    unit: str | None  # the systemd unit whose cgroup holds it
    stdout: str | None  # where its output goes, when that is a regular file
    same_netns: bool


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _unit_of(cgroup_text: str) -> str | None:
    for line in cgroup_text.splitlines():
        for part in line.rsplit(":", 1)[-1].split("/"):
            if part.endswith(".service"):
                return part
    return None


def _same_namespace(pid: int, kind: str) -> bool:
    try:
        return (PROC / str(pid) / "ns" / kind).stat().st_ino == (PROC / "self" / "ns" / kind).stat().st_ino
    except OSError:
        return True  # cannot tell: assume the usual


def read_process(pid: int) -> DaemonProcess:
    """What /proc says about ``pid``. Raises ConfigError when it is gone or unreadable (not root)."""
    argv = [a.decode(errors="replace") for a in _read(PROC / str(pid) / "cmdline").split(b"\0") if a]
    if not argv:
        raise ConfigError(f"cannot read process {pid} in /proc (gone, or labgpu does not run as root)")
    env: dict[str, str] = {}
    for item in _read(PROC / str(pid) / "environ").split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if sep:
            env[key] = value
    try:
        exe = str((PROC / str(pid) / "exe").readlink())
    except OSError:
        exe = ""
    if exe.endswith(" (deleted)"):  # upgraded since it started: the program found by name is the new one
        exe = shutil.which(argv[0]) or ""
    try:
        out = str((PROC / str(pid) / "fd" / "1").readlink())
    except OSError:
        out = ""
    return DaemonProcess(
        pid=pid,
        argv=argv,
        exe=exe,
        env=env,
        unit=_unit_of(_read(PROC / str(pid) / "cgroup").decode(errors="replace")),
        stdout=out if out.startswith("/") and Path(out).is_file() else None,
        same_netns=_same_namespace(pid, "net"),
    )


def restart_method(kind: str, process: DaemonProcess, *, systemd: bool) -> list[str] | None:
    """The command that restarts the daemon keeping its instances, or None for SIGTERM and a new start
    of the same command line (no systemd)."""
    if systemd and process.unit == SNAP_LXD_UNIT:
        return ["systemctl", "reload", SNAP_LXD_UNIT]
    if systemd and process.unit and process.unit.startswith(("lxd", "incus")):
        return ["systemctl", "restart", process.unit]
    return None


def _run(args: list[str], what: str) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=STOP_TIMEOUT + 60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{what}: {' '.join(args)} failed ({exc})") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"{what}: {' '.join(args)} failed: {lines[-1] if lines else done.returncode}")


def _spawn(argv: list[str], *, exe: str, env: dict[str, str], log: Path | None) -> None:
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        subprocess.Popen(  # the daemon's own argument list, never a shell
            argv,
            executable=exe or None,
            env=env,
            cwd="/",  # a daemon started in a folder deleted later breaks rsync (moves between hosts)
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ConfigError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    finally:
        if log is not None and not isinstance(out, int):
            out.close()


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not (PROC / str(pid)).exists():
            return True
        with contextlib.suppress(ChildProcessError):  # our own child (tests): reap it, or it stays a zombie
            os.waitpid(pid, os.WNOHANG)
        status = _read(PROC / str(pid) / "stat").split(b") ", 1)[-1][:1]
        if status == b"Z":
            return True
        time.sleep(0.1)
    return False


def restart_daemon(kind: str, pid: int, *, systemd: bool | None = None) -> str:
    """Restart the daemon running as ``pid`` the way it runs, keeping its instances running; returns how
    (for the report). Does not wait for its API: the caller does. Raises ConfigError saying why it cannot
    and what to run instead."""
    if os.geteuid() != 0:
        raise ConfigError("restarting the daemon needs root", hint="run labgpu host init as root")
    process = read_process(pid)
    method = restart_method(kind, process, systemd=systemd_running() if systemd is None else systemd)
    if method is not None:
        _run(method, "restarting the daemon")
        return " ".join(method)
    if not process.same_netns:
        raise ConfigError(
            f"the daemon (pid {pid}) runs in another network namespace than labgpu: restarting it from "
            "here would move it into this one",
            hint="restart it where it was started",
        )
    os.kill(pid, signal.SIGTERM)
    if not _wait_gone(pid, STOP_TIMEOUT):
        raise ConfigError(f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT:g}s after SIGTERM")
    _spawn(
        process.argv, exe=process.exe, env=process.env, log=Path(process.stdout) if process.stdout else None
    )
    return f"SIGTERM to pid {pid}, then {' '.join(process.argv)} again (no systemd)"


def installed_kind() -> str | None:
    """Which daemon is installed here (LXD first), or None."""
    if shutil.which("lxd") or Path("/snap/bin/lxd").exists():
        return "lxd"
    if INCUSD.exists():
        return "incus"
    return None


def _group(*names: str) -> str:
    for name in names:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        return name
    return "root"


def start_daemon(kind: str, *, log_dir: Path = DEFAULT_LOG_DIR, systemd: bool | None = None) -> str:
    """Start the daemon where it does not run: its own units where systemd runs, else the daemon itself
    in a new session from ``/`` (as scripts/start-daemons does). Returns how. Does not wait for its API.
    Raises ConfigError when it is not installed or cannot be started."""
    if systemd is None:
        systemd = systemd_running()
    if systemd:
        if kind == "lxd" and Path("/snap/bin/lxd").exists():
            _run(["snap", "start", "lxd"], "starting LXD")
            return "snap start lxd"
        _run(["systemctl", "start", *SYSTEMD_START[kind]], f"starting {kind}")
        return f"systemctl start {' '.join(SYSTEMD_START[kind])}"
    if os.geteuid() != 0:
        raise ConfigError(f"starting {kind} needs root", hint="run labgpu setup as root")
    if kind == "lxd":
        program = shutil.which("lxd")
        group = _group("lxd")
    else:
        program = str(INCUSD) if INCUSD.exists() else None
        group = _group("incus-admin")
    if program is None:
        raise ConfigError(f"{kind} is not installed", hint="run labgpu setup without --no-packages")
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {log_dir}: {exc.strerror or exc}") from None
    argv = [program, "--group", group, "--logfile", str(log_dir / f"{kind}.log")]
    _spawn(
        argv,
        exe=program,
        env={**os.environ, "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
        log=log_dir / f"{kind}.out",
    )
    return " ".join(argv)


def wait_until(ready: Callable[[], bool], timeout: float) -> bool:
    """Poll ``ready`` until it says True or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
