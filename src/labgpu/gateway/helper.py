"""gateway-exec: the privileged half of the login gateway (run as root through sudo).

labgpu-login runs ``sudo -n -- gateway-exec MODE [COMMAND]`` for a member logged in to the host. The
sudoers rule lets the gateway group run this program and nothing else. It trusts only what sudo
and the system say:

- the member is the account whose uid sudo reports in SUDO_UID (sudo sets it; the caller cannot),
  looked up in the password database, never an SSH variable or an argument;
- the member's container comes from the map that labgpu writes (root-owned, not readable by
  members), checked against that account's uid;
- arguments only choose the mode (shell, command, sftp) and carry the command, which runs inside
  the member's own container as its user, where the member may run anything anyway;
- the daemon is reached through the lxc/incus client named in the map, with a fixed environment and
  argument lists (no host shell is ever involved).

So a member can reach exactly one container, their own, whatever they pass. The standard library
only: ``labgpu host gateway enable`` installs this module as a stand-alone script run by
``python3 -I -S`` (no PYTHON* variables, no site-packages, no current folder on the path).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import stat
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

# The host's own python3 runs this file, which may be older than labgpu's (3.8 and later work).
UTC = timezone.utc  # noqa: UP017
DEFAULT_MAP = "/etc/labgpu/gateway/map.json"
MAP_VERSION = 1
EXIT_REFUSED = 1
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
_TERM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
_LANG_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
_QUERY_TIMEOUT = 30
_START_TIMEOUT = 180

# Runs inside the container as the container user (runuser sets HOME, USER and LOGNAME). A constant:
# the member's command arrives as "$2", the way sshd hands a command to the user's shell.
LAUNCHER = r"""cd "$HOME" 2>/dev/null || cd /
shell=$(getent passwd "$(id -un)" | cut -d: -f7)
if [ -z "$shell" ] || [ ! -x "$shell" ]; then shell=/bin/sh; fi
SHELL=$shell; export SHELL
case "$1" in
command) exec "$shell" -c "$2" ;;
sftp)
  for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server \
           /usr/libexec/sftp-server /usr/lib/sftp-server; do
    if [ -x "$p" ]; then exec "$p"; fi
  done
  echo "labgpu: this container has no sftp-server (sudo apt install openssh-sftp-server)" >&2
  exit 127 ;;
esac
exit 2
"""


class Refused(Exception):
    """The session cannot go on; the message is shown to the member."""


def parse_request(argv: list[str]) -> tuple[str, str | None]:
    """(mode, command) from the arguments labgpu-login passes."""
    if argv in (["shell"], ["sftp"]):
        return argv[0], None
    if len(argv) == 2 and argv[0] == "command":
        return "command", argv[1]
    raise Refused("usage: gateway-exec shell | sftp | command CMD (run by labgpu-login)")


def invoking_uid(environ: dict[str, str]) -> int:
    """The uid of the account that ran sudo. Refused unless we are root by sudo's hand."""
    if os.getuid() != 0 or os.geteuid() != 0:
        raise Refused("gateway-exec must be run through sudo by labgpu-login")
    value = environ.get("SUDO_UID", "")
    if not value.isdigit():
        raise Refused("gateway-exec must be run through sudo by labgpu-login")
    uid = int(value)
    if uid == 0:
        raise Refused("root does not log in through the gateway; use lxc/incus directly")
    return uid


def load_map(path: str) -> dict[str, Any]:
    """The gateway map, refused unless root owns it and nobody else may write it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise Refused(
            f"the login gateway is not set up on this host ({exc.strerror}); tell your admin"
        ) from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise Refused(
                "the gateway map is not root's alone; the admin must run `labgpu host gateway sync`"
            )
        try:
            data = json.loads(f.read().decode("utf-8"))
        except ValueError:
            raise Refused("the gateway map is damaged; tell your admin (labgpu host gateway sync)") from None
    if not isinstance(data, dict) or data.get("version") != MAP_VERSION:
        raise Refused("the gateway map has an unknown version; tell your admin (labgpu host gateway sync)")
    return data


def find_member(gmap: dict[str, Any], uid: int) -> tuple[str, dict[str, Any]]:
    """The member whose gateway account has ``uid``, checked against the password and group databases."""
    try:
        account = pwd.getpwuid(uid)
    except KeyError:
        raise Refused(f"uid {uid} has no account on this host") from None
    name = account.pw_name
    entry = (gmap.get("members") or {}).get(name)
    if not isinstance(entry, dict) or entry.get("uid") != uid:
        raise Refused(f"{name} is not a labgpu member on this host")
    group = str(gmap.get("group") or "")
    try:
        gr = grp.getgrnam(group)
    except KeyError:
        raise Refused("the gateway group is missing; tell your admin (labgpu host gateway sync)") from None
    if account.pw_gid != gr.gr_gid and name not in gr.gr_mem:
        raise Refused(f"{name} is not in the gateway group {group}")
    if entry.get("disabled"):
        raise Refused("your account is disabled; ask your admin")
    elsewhere = entry.get("elsewhere")
    if elsewhere:
        raise Refused(f"your container lives on another host: ssh {name}@{elsewhere}")
    state = entry.get("state")
    if state == "provisioning":
        raise Refused("your container is still being set up; try again in a minute")
    if state == "removing":
        raise Refused("your container is being removed")
    container = str(entry.get("container") or "")
    if not _NAME_RE.match(container):
        raise Refused("you have no container on this host yet; ask your admin")
    return name, entry


class Runtime:
    """The lxc or incus client, with a fixed environment, talking to the local daemon only."""

    def __init__(self, spec: dict[str, Any]) -> None:
        cli = str(spec.get("cli") or "")
        if not cli.startswith("/") or cli.rsplit("/", 1)[-1] not in ("lxc", "incus"):
            raise Refused("the gateway map names no lxc/incus client; tell your admin")
        self.cli = cli
        self.project = str(spec.get("project") or "default")
        if not re.match(r"^[A-Za-z0-9_.-]{1,63}\Z", self.project):
            raise Refused("the gateway map names a bad project; tell your admin")
        self.env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin", "HOME": "/root", "LANG": "C.UTF-8"}
        for key, value in (spec.get("env") or {}).items():
            if key in ("LXD_DIR", "INCUS_DIR", "LXD_CONF", "INCUS_CONF") and str(value).startswith("/"):
                self.env[key] = str(value)

    def _project_args(self) -> list[str]:
        return [] if self.project == "default" else ["--project", self.project]

    def query(self, path: str) -> Any:
        sep = "&" if "?" in path else "?"
        if self.project != "default":
            path = f"{path}{sep}project={self.project}"
        done = subprocess.run(
            [self.cli, "query", "--force-local", path],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=_QUERY_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise Refused(f"cannot reach your container ({_first_line(done.stderr)}); tell your admin")
        return json.loads(done.stdout or "null")

    def start(self, container: str) -> None:
        done = subprocess.run(
            [self.cli, "start", "--force-local", *self._project_args(), container],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=_START_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise Refused(
                f"your container could not be started ({_first_line(done.stderr)}); tell your admin"
            )

    def exec_argv(self, container: str, *, tty: bool, env: dict[str, str], command: list[str]) -> list[str]:
        argv = [self.cli, "exec", "--force-local", *self._project_args(), container, "-t" if tty else "-T"]
        for key, value in env.items():
            argv += ["--env", f"{key}={value}"]
        return [*argv, "--", *command]


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else "no answer"
    return (line[7:] if line.startswith("Error: ") else line)[:200]


def container_command(mode: str, command: str | None, user: str) -> list[str]:
    """What runs in the container (as root there) to become the container user, for each mode."""
    if mode == "shell":
        return ["runuser", "--login", "--", user]
    args = ["command", command or ""] if mode == "command" else ["sftp"]
    return ["runuser", "--shell=/bin/sh", f"--command={LAUNCHER}", "--", user, "labgpu-gateway", *args]


def session_env(environ: dict[str, str], *, tty: bool) -> dict[str, str]:
    """Variables passed into the container: the terminal type and the language, when they look sane."""
    env: dict[str, str] = {}
    term = environ.get("TERM", "")
    if tty and _TERM_RE.match(term):
        env["TERM"] = term
    for key in ("LANG", "LC_ALL"):
        value = environ.get(key, "")
        if _LANG_RE.match(value):
            env[key] = value
    return env


# Status -----------------------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _local(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M")


def _clean(text: str) -> str:
    # Notices are the admin's words, but they end up on members' terminals: no control sequences.
    return "".join(c for c in text if c == "\n" or (c.isprintable() and c != "\x1b"))


def active_notices(gmap: dict[str, Any], now: datetime) -> list[str]:
    """The notices in force at ``now``, each as display text."""
    out = []
    for notice in gmap.get("notices") or []:
        if not isinstance(notice, dict):
            continue
        starts, ends = _parse_time(notice.get("starts_at")), _parse_time(notice.get("ends_at"))
        if (starts is not None and starts > now) or (ends is not None and ends <= now):
            continue
        text = _clean(str(notice.get("message") or "")).strip()
        if text:
            out.append(text + (f" (until {_local(ends)})" if ends else ""))
    return out


def booking_lines(entry: dict[str, Any], now: datetime) -> list[str]:
    lines = []
    for booking in entry.get("bookings") or []:
        if not isinstance(booking, dict):
            continue
        start, end = _parse_time(booking.get("start_at")), _parse_time(booking.get("end_at"))
        if start is None or end is None or end <= now:
            continue
        gpus = _clean(str(booking.get("gpus") or "?"))
        status = _clean(str(booking.get("status") or ""))
        if start <= now:
            lines.append(f"GPUs {gpus} booked now, until {_local(end)}")
        else:
            pending = " (waiting for approval)" if status == "pending" else ""
            lines.append(f"GPUs {gpus} booked {_local(start)} - {_local(end)}{pending}")
    return lines[:3]


def status_text(
    name: str, entry: dict[str, Any], gmap: dict[str, Any], *, status: str, gpus_attached: int, now: datetime
) -> str:
    """The short status shown before an interactive shell."""
    host = gmap.get("host") or {}
    address = _clean(str(host.get("address") or host.get("name") or "this host"))
    container = _clean(str(entry.get("container")))
    lines = [
        f"labgpu: {name}, container {container} on {_clean(str(host.get('name') or address))} ({status.lower()})"
    ]
    spec = _clean(str(entry.get("gpus") or "none"))
    lines.append(f"  GPUs:     {spec} ({gpus_attached} attached now)")
    for line in booking_lines(entry, now):
        lines.append(f"  Booking:  {line}")
    ports = entry.get("ports") or {}
    user = _clean(str(gmap.get("container_user") or "ubuntu"))
    if isinstance(ports, dict) and ports:
        shown = []
        if "ssh" in ports:
            shown.append(f"ssh -p {int(ports['ssh'])} {user}@{address}")
        shown += [f"{_clean(str(p))} {address}:{int(v)}" for p, v in sorted(ports.items()) if p != "ssh"]
        lines.append("  Direct:   " + "   ".join(shown))
    home = entry.get("home")
    if home:
        lines.append(f"  Home:     {_clean(str(home))} (kept on the host when the container is rebuilt)")
    notices = active_notices(gmap, now)
    if notices:
        lines.append("Notices:")
        for text in notices:
            first, *rest = text.splitlines() or [""]
            lines.append(f"  * {first}")
            lines += [f"    {line}" for line in rest]
    return "\n".join(lines) + "\n"


def _gpu_count(runtime: Runtime, container: str) -> int:
    try:
        inst = runtime.query(f"/1.0/instances/{container}")
    except (Refused, ValueError, subprocess.SubprocessError):
        return 0
    devices = (inst or {}).get("expanded_devices") or {}
    return sum(1 for d in devices.values() if isinstance(d, dict) and d.get("type") == "gpu")


# Main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, map_path: str = DEFAULT_MAP) -> int:
    """Serve one gateway session: start the member's container if needed, then replace this process
    with the client's exec into it (so its exit code is the session's). Returns only on refusal."""
    argv = list(sys.argv[1:] if argv is None else argv)
    environ = dict(os.environ)
    try:
        mode, command = parse_request(argv)
        uid = invoking_uid(environ)
        gmap = load_map(map_path)
        name, entry = find_member(gmap, uid)
        container = str(entry["container"])
        runtime = Runtime(gmap.get("runtime") or {})
        state = runtime.query(f"/1.0/instances/{container}/state") or {}
        status = str(state.get("status") or "unknown")
        if status != "Running":
            if mode != "sftp":
                sys.stderr.write(f"labgpu: starting your container {container} ...\n")
                sys.stderr.flush()
            runtime.start(container)
            status = "Running"
        tty = os.isatty(0) and os.isatty(1)
        if mode == "shell":
            now = datetime.now(UTC)
            text = status_text(
                name, entry, gmap, status=status, gpus_attached=_gpu_count(runtime, container), now=now
            )
            sys.stdout.write(text)
            sys.stdout.flush()
        user = str(gmap.get("container_user") or "ubuntu")
        if not _NAME_RE.match(user) and user != "root":
            raise Refused("the gateway map names a bad container user; tell your admin")
        argv_exec = runtime.exec_argv(
            container,
            tty=tty,
            env=session_env(environ, tty=tty),
            command=container_command(mode, command, user),
        )
        os.execve(runtime.cli, argv_exec, runtime.env)  # noqa: S606 - an argument list, no shell
    except Refused as exc:
        sys.stderr.write(f"labgpu: {exc}\n")
        return EXIT_REFUSED
    except (OSError, subprocess.SubprocessError) as exc:
        sys.stderr.write(f"labgpu: the login gateway failed ({exc}); tell your admin\n")
        return EXIT_REFUSED
    return EXIT_REFUSED  # not reached: execve replaced the process
