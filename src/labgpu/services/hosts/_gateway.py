"""The login gateway: members ``ssh NAME@host`` on the host's own SSH port and land in their container.

The seeds gave each member a host account whose login shell was a script that started the
member's LXC container and showed a few hints; members reached the container itself through a
forwarded port. This is that design made safe (threat model in docs/admin/gateway.md):

- every member gets a host account in ``gateway_group``, with labgpu-login as its shell, a shared
  root-owned home it cannot write, and a password that cannot be used (keys only, unless
  ``gateway_password_login``); its authorized keys are a root-owned, read-only copy of the member's
  keys from the store, each marked ``restrict,pty``;
- an sshd_config drop-in matches that group: ``ForceCommand`` labgpu-login, no forwarding of any
  kind, no ~/.ssh/rc, keys read from ``gateway_dir/keys/%u``;
- labgpu-login (running as the member) can do one thing: ``sudo -n`` the gateway helper, the only
  command a sudoers rule allows the group; the helper (root) finds the member from SUDO_UID and the
  root-only map written here, starts their container if needed and execs into it as the container
  user. Accounts are never in the lxd/incus group and never get a host shell.

Nothing here runs at import. Every function takes the paths from the settings (tests point them at
temporary places) and shells out with argument lists only.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu import __version__
from labgpu.errors import ConfigError, Conflict, LabgpuError, NotFound
from labgpu.gateway import helper as helper_module
from labgpu.gateway import login as login_module
from labgpu.services.context import Services
from labgpu.services.hosts._records import public_address, recorded_local_host
from labgpu.settings import Settings
from labgpu.store.models import (
    Account,
    Booking,
    BookingStatus,
    Member,
    MemberState,
    Notice,
    utcnow,
)

MARKER = "# Managed by labgpu"
GECOS_PREFIX = "labgpu gateway account of "
KEY_OPTIONS = "restrict,pty"
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._+-]*\Z")
_SUBPROCESS_TIMEOUT = 60

CREATED = "created"
CHANGED = "changed"
UNCHANGED = "unchanged"
REMOVED = "removed"
ATTENTION = "needs-attention"


@dataclass(frozen=True)
class GatewayPaths:
    """Where the gateway's pieces live, from the settings."""

    group: str
    login: Path
    helper: Path
    sshd_config: Path
    sudoers: Path
    dir: Path
    python: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayPaths:
        return cls(
            group=settings.gateway_group,
            login=settings.gateway_login_command,
            helper=settings.gateway_helper,
            sshd_config=settings.gateway_sshd_config,
            sudoers=settings.gateway_sudoers,
            dir=settings.gateway_dir,
            python=settings.gateway_python,
        )

    @property
    def map(self) -> Path:
        return self.dir / "map.json"

    @property
    def keys(self) -> Path:
        return self.dir / "keys"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    def check(self) -> None:
        """Refuse paths that could not be written safely into sshd_config and sudoers."""
        for what, path in (
            ("gateway_login_command", self.login),
            ("gateway_helper", self.helper),
            ("gateway_sshd_config", self.sshd_config),
            ("gateway_sudoers", self.sudoers),
            ("gateway_dir", self.dir),
            ("gateway_python", self.python),
        ):
            if not _SAFE_PATH.match(str(path)):
                raise ConfigError(
                    f"{what} {str(path)!r} must be an absolute path of letters, digits and / . _ + -"
                )
        if "." in self.sudoers.name or self.sudoers.name.endswith("~"):
            # sudo skips files in sudoers.d whose names contain a dot or end in ~.
            raise ConfigError(
                f"gateway_sudoers {self.sudoers}: sudo ignores names with a '.' or ending in '~'"
            )


@dataclass(frozen=True)
class Step:
    """One thing enable/disable/sync did or found."""

    step: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class GatewayReport:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)  # shown once (gateway_password_login)

    def add(self, step: str, status: str, detail: str) -> None:
        self.steps.append(Step(step, status, detail))

    @property
    def needs_attention(self) -> bool:
        return any(s.status == ATTENTION for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.status in (CREATED, CHANGED, REMOVED) for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": [s.as_dict() for s in self.steps],
            "notes": self.notes,
            "passwords": self.passwords,
            "needs_attention": self.needs_attention,
        }


# Small helpers ------------------------------------------------------------------------------------


def _run(args: Sequence[str], *, what: str, input_text: str | None = None) -> str:
    try:
        done = subprocess.run(
            list(args),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise LabgpuError(f"{what}: {args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabgpuError(f"{what}: {args[0]} did not finish within {_SUBPROCESS_TIMEOUT}s") from None
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise LabgpuError(f"{what} failed: {reason[-1] if reason else f'exit code {done.returncode}'}")
    return done.stdout


def _write_atomic(path: Path, text: str, *, mode: int) -> bool:
    """Write ``text`` to ``path`` (root-owned, ``mode``) unless it already holds exactly that.
    Returns True when the file changed."""
    if path.is_file() and not path.is_symlink():
        info = path.stat()
        if path.read_text() == text and stat.S_IMODE(info.st_mode) == mode and info.st_uid == 0:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".labgpu-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _managed(path: Path) -> bool:
    try:
        return path.is_file() and MARKER in path.read_text()
    except OSError:
        return False


def _unsafe_parent(path: Path) -> Path | None:
    """The first folder above ``path`` that someone other than root could change, if any."""
    for parent in [path.parent, *path.parent.parents]:
        try:
            info = parent.stat()
        except FileNotFoundError:
            continue
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return parent
    return None


def _world_traversable(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users cannot enter, if any."""
    for candidate in (path, path.resolve()):
        for parent in reversed(candidate.parents):
            try:
                if not parent.stat().st_mode & stat.S_IXOTH:
                    return parent
            except FileNotFoundError:
                return parent
    return None


def systemd_running() -> bool:
    """Whether systemd is PID 1 (it is not in containers and on these development machines)."""
    return Path("/run/systemd/system").is_dir()


def is_enabled(settings: Settings) -> bool:
    """Whether `host gateway enable` ran (its sshd drop-in is in place)."""
    return _managed(settings.gateway_sshd_config)


# What is written ----------------------------------------------------------------------------------


def render_sshd_config(paths: GatewayPaths, *, password_login: bool) -> str:
    """The sshd_config drop-in: one Match block for the gateway group."""
    auth = (
        "    # Password logins allowed (gateway_password_login = true).\n"
        if password_login
        else "    AuthenticationMethods publickey\n"
        "    PasswordAuthentication no\n"
        "    KbdInteractiveAuthentication no\n"
    )
    return (
        f"{MARKER} (`labgpu host gateway enable`); `labgpu host gateway disable` removes it.\n"
        f"# Accounts in {paths.group} are labgpu members: whatever they ask for, sshd runs labgpu-login,\n"
        "# which takes them into their own container. Nothing is forwarded.\n"
        f"Match Group {paths.group}\n"
        f"    ForceCommand {paths.login}\n"
        f"    AuthorizedKeysFile {paths.keys}/%u\n"
        f"{auth}"
        "    DisableForwarding yes\n"
        "    AllowTcpForwarding no\n"
        "    AllowStreamLocalForwarding no\n"
        "    AllowAgentForwarding no\n"
        "    X11Forwarding no\n"
        "    PermitTunnel no\n"
        "    PermitListen none\n"
        "    PermitOpen none\n"
        "    GatewayPorts no\n"
        "    PermitTTY yes\n"
        "    PermitUserRC no\n"
    )


def render_sudoers(paths: GatewayPaths) -> str:
    """The sudoers drop-in: the gateway group may run the helper as root, without a password, and nothing else."""
    return (
        f"{MARKER} (`labgpu host gateway enable`); `labgpu host gateway disable` removes it.\n"
        f"# Members ({paths.group}) may run the gateway helper as root and nothing else. The helper finds\n"
        "# the member from SUDO_UID and only ever reaches that member's own container.\n"
        f"Defaults!{paths.helper} !use_pty, env_reset, !lecture\n"
        f"%{paths.group} ALL=(root) NOPASSWD: {paths.helper}\n"
    )


def render_script(module_file: str, *, python: Path, call: str) -> str:
    """A stand-alone copy of a stdlib-only module, run by ``python -I -S``, ending in ``sys.exit(call)``."""
    source = Path(module_file).read_text()
    return (
        f"#!{python} -IS\n"
        f"{MARKER} {__version__} (`labgpu host gateway enable` writes it again; do not edit).\n"
        f"{source.rstrip()}\n\n\n"
        'if __name__ == "__main__":\n'
        f"    sys.exit({call})\n"
    )


def render_login(paths: GatewayPaths) -> str:
    return render_script(
        login_module.__file__,
        python=paths.python,
        call=f"main(helper={str(paths.helper)!r}, sudo={_sudo_path()!r})",
    )


def render_helper(paths: GatewayPaths) -> str:
    return render_script(
        helper_module.__file__, python=paths.python, call=f"main(map_path={str(paths.map)!r})"
    )


def _sudo_path() -> str:
    return shutil.which("sudo", path="/usr/bin:/bin:/usr/sbin:/sbin") or "/usr/bin/sudo"


def authorized_keys_text(keys: Sequence[str]) -> str:
    """The gateway account's authorized_keys: the member's keys, each restricted to a session with a tty."""
    lines = [f"{KEY_OPTIONS} {k.strip()}" for k in keys if k.strip()]
    header = f"{MARKER}: the keys of this member in the store (`labgpu member key`); rewritten on changes.\n"
    return header + "".join(line + "\n" for line in lines)


# Checks before anything is changed ----------------------------------------------------------------


def preflight(svc: Services, paths: GatewayPaths) -> None:
    """Refuse to enable the gateway where it could not work or would not be safe. Raises ConfigError."""
    paths.check()
    if not svc.runtime.endpoint.is_unix:
        raise ConfigError(
            "the login gateway needs the local LXD/Incus daemon (runtime_url is not a unix socket)"
        )
    for tool in ("sudo", "visudo", "useradd", "userdel", "groupadd", "usermod"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
            raise ConfigError(f"{tool} is not installed", hint="apt install sudo passwd")
    if _sshd() is None:
        raise ConfigError("sshd is not installed", hint="apt install openssh-server")
    _runtime_cli(svc)
    if not paths.python.is_file():
        raise ConfigError(f"gateway_python {paths.python} does not exist", hint="apt install python3")
    blocked = _world_traversable(paths.python)
    if blocked is not None or not paths.python.resolve().stat().st_mode & stat.S_IXOTH:
        raise ConfigError(
            f"members cannot run gateway_python {paths.python} ({blocked or 'not executable'} is closed to them)",
            hint="set gateway_python to an interpreter every user may run, e.g. /usr/bin/python3",
        )
    version = _run(
        [str(paths.python), "-IS", "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
        what=f"checking {paths.python}",
    ).split()
    if tuple(int(v) for v in version) < (3, 8):
        raise ConfigError(
            f"gateway_python {paths.python} is Python {'.'.join(version)}; 3.8 or later is needed"
        )
    for what, path in (("gateway_helper", paths.helper), ("gateway_login_command", paths.login)):
        unsafe = _unsafe_parent(path)
        if unsafe is not None:
            raise ConfigError(
                f"{what} {path}: the folder {unsafe} may be changed by users other than root",
                hint="choose a place only root can write, such as /usr/local/lib/labgpu",
            )


def _sshd() -> str | None:
    return shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin:/bin")


def _runtime_cli(svc: Services) -> str:
    kind = svc.runtime.server().kind
    name = "incus" if kind == "incus" else "lxc"
    cli = shutil.which(name, path="/usr/bin:/usr/sbin:/bin:/snap/bin:/usr/local/bin")
    if cli is None:
        raise ConfigError(
            f"the {name} command is not installed; the gateway runs `{name} exec` for members",
            hint="install the client of your daemon",
        )
    return cli


def check_sshd_config(text: str) -> None:
    """Have sshd parse the drop-in (in a throwaway main config). Raises ConfigError with sshd's words."""
    sshd = _sshd()
    if sshd is None:
        raise ConfigError("sshd is not installed", hint="apt install openssh-server")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd -t wants its privilege separation folder
    with tempfile.TemporaryDirectory(prefix="labgpu-sshd-check-") as tmp:
        folder = Path(tmp)
        (folder / "drop-in.conf").write_text(text)
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "hostkey")],
            what="making a throwaway host key",
        )
        (folder / "sshd_config").write_text(
            f"Include {folder / 'drop-in.conf'}\nHostKey {folder / 'hostkey'}\n"
        )
        try:
            _run([sshd, "-t", "-f", str(folder / "sshd_config")], what="sshd -t")
        except LabgpuError as exc:
            raise ConfigError(f"sshd refuses the gateway's drop-in: {exc.message}") from None


def check_sudoers(text: str, target: Path) -> None:
    """Have visudo check the rule before sudo sees it (a broken file in sudoers.d breaks sudo for all)."""
    visudo = shutil.which("visudo", path="/usr/sbin:/usr/bin:/sbin:/bin") or "visudo"
    fd, tmp = tempfile.mkstemp(prefix="labgpu-sudoers-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        Path(tmp).chmod(0o440)
        _run([visudo, "-c", "-q", "-f", tmp], what=f"visudo -c for {target}")
    finally:
        Path(tmp).unlink(missing_ok=True)


def effective_force_command(sshd_main_config: Path, account: str) -> str | None:
    """What sshd would force for ``account`` with the host's real configuration (sshd -T), or None
    when that cannot be told (no sshd, unreadable config)."""
    sshd = _sshd()
    if sshd is None or not sshd_main_config.is_file():
        return None
    try:
        out = _run(
            [
                sshd,
                "-T",
                "-f",
                str(sshd_main_config),
                "-C",
                f"user={account},host=gateway-check,addr=127.0.0.1",
            ],
            what="sshd -T",
        )
    except LabgpuError:
        return None
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "forcecommand":
            return value.strip()
    return "none"


# Accounts -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewayAccount:
    name: str
    uid: int
    member_exists: bool


def _group_gid(group: str) -> int | None:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def _is_gateway_account(entry: pwd.struct_passwd, gid: int | None) -> bool:
    return entry.pw_gecos.startswith(GECOS_PREFIX) and gid is not None and entry.pw_gid == gid


def gateway_accounts(paths: GatewayPaths) -> list[pwd.struct_passwd]:
    """The host accounts labgpu made for the gateway (marked in their comment field, in the group)."""
    gid = _group_gid(paths.group)
    return sorted((e for e in pwd.getpwall() if _is_gateway_account(e, gid)), key=lambda e: e.pw_name)


def ensure_group(paths: GatewayPaths, report: GatewayReport) -> None:
    if _group_gid(paths.group) is not None:
        report.add("group", UNCHANGED, f"group {paths.group} exists")
        return
    _run(["groupadd", "--system", paths.group], what=f"groupadd {paths.group}")
    report.add("group", CREATED, f"group {paths.group}")


def ensure_account(
    paths: GatewayPaths, name: str, keys: Sequence[str], report: GatewayReport, *, password_login: bool
) -> None:
    """Create (or bring back to shape) the member's gateway account and write their keys.

    Raises Conflict when a host account of that name exists and is not labgpu's."""
    gid = _group_gid(paths.group)
    if gid is None:
        raise LabgpuError(f"group {paths.group} is missing; run `labgpu host gateway enable`")
    try:
        entry: pwd.struct_passwd | None = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is not None and not _is_gateway_account(entry, gid):
        raise Conflict(
            f"the host already has an account named {name} that is not labgpu's gateway account",
            hint=f"{name} can still use the direct SSH port; rename the host account to use the gateway",
        )
    if entry is None:
        _run(
            [
                "useradd",
                "--no-create-home",
                "--home-dir", str(paths.home),
                "--shell", str(paths.login),
                "--gid", paths.group,
                "--comment", GECOS_PREFIX + name,
                "--password", "*",  # no usable password: not locked (sshd refuses locked accounts without PAM)
                "-K", "SUB_UID_COUNT=0",
                "-K", "SUB_GID_COUNT=0",
                name,
            ],
            what=f"useradd {name}",
        )  # fmt: skip
        report.add(
            f"account {name}", CREATED, f"host account {name} (group {paths.group}, shell labgpu-login)"
        )
        if password_login:
            password = secrets.token_urlsafe(12)
            _run(["chpasswd"], input_text=f"{name}:{password}\n", what=f"setting {name}'s password")
            _run(["chage", "-d", "0", name], what=f"expiring {name}'s password")
            report.passwords[name] = password
    elif entry.pw_shell != str(paths.login) or entry.pw_dir != str(paths.home):
        _run(
            ["usermod", "--shell", str(paths.login), "--home", str(paths.home), name],
            what=f"usermod {name}",
        )
        report.add(f"account {name}", CHANGED, "shell and home put back")
    if _write_atomic(paths.keys / name, authorized_keys_text(keys), mode=0o644):
        report.add(f"keys {name}", CHANGED, f"{len(keys)} key(s) in {paths.keys / name}")


def remove_account(paths: GatewayPaths, name: str, report: GatewayReport) -> None:
    """Delete the member's gateway account (never anything else: no home, no other account)."""
    gid = _group_gid(paths.group)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is not None and _is_gateway_account(entry, gid):
        _run(["userdel", name], what=f"userdel {name}")
        report.add(f"account {name}", REMOVED, "gateway account deleted")
    key_file = paths.keys / name
    if key_file.exists():
        key_file.unlink()
        report.add(f"keys {name}", REMOVED, str(key_file))


# The map the helper reads -------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def build_map(svc: Services, paths: GatewayPaths, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the helper needs, from the store: members (container, state, ports, GPUs, bookings),
    the active and coming notices, and how to reach the daemon."""
    settings = svc.settings
    now = now or utcnow()
    runtime_kind = svc.runtime.server().kind
    socket_dir = str(svc.runtime.endpoint.socket_path.parent) if svc.runtime.endpoint.socket_path else ""
    env_name = "INCUS_DIR" if runtime_kind == "incus" else "LXD_DIR"
    members: dict[str, Any] = {}
    with svc.session() as session:
        local = recorded_local_host(session)
        host_info = {
            "name": local.name if local else "",
            "address": public_address(local, settings) if local else settings.public_address or "",
        }
        rows = session.scalars(
            select(Member)
            .order_by(Member.name)
            .options(selectinload(Member.port_maps), selectinload(Member.host))
        ).all()
        disabled = {
            a.member_id for a in session.scalars(select(Account).where(Account.disabled_at.is_not(None)))
        }
        bookings: dict[int, list[dict[str, Any]]] = {}
        live = (BookingStatus.PENDING, BookingStatus.APPROVED, BookingStatus.ACTIVE)
        for b in session.scalars(
            select(Booking).where(Booking.status.in_(live), Booking.end_at > now).order_by(Booking.start_at)
        ):
            bookings.setdefault(b.member_id, []).append(
                {
                    "gpus": b.gpus,
                    "start_at": _iso(b.start_at),
                    "end_at": _iso(b.end_at),
                    "status": str(b.status),
                }
            )
        for m in rows:
            try:
                uid = pwd.getpwnam(m.name).pw_uid
            except KeyError:
                continue  # no gateway account (yet)
            elsewhere = None
            if m.host is not None and local is not None and m.host.id != local.id:
                elsewhere = public_address(m.host, settings)
            members[m.name] = {
                "uid": uid,
                "container": m.container,
                "state": str(m.state),
                "disabled": m.id in disabled,
                "elsewhere": elsewhere,
                "ports": {str(p.purpose): p.host_port for p in sorted(m.port_maps, key=lambda p: p.purpose)},
                "gpus": m.gpu_spec or settings.default_gpus,
                "home": settings.container_home.format(name=m.name),
                "bookings": bookings.get(m.id, []),
            }
        notices = [
            {"message": n.message, "starts_at": _iso(n.starts_at), "ends_at": _iso(n.ends_at)}
            for n in session.scalars(
                select(Notice)
                .where((Notice.ends_at.is_(None)) | (Notice.ends_at > now))
                .order_by(Notice.starts_at, Notice.id)
            )
        ]
    return {
        "version": helper_module.MAP_VERSION,
        "written_at": now.isoformat(),
        "group": paths.group,
        "container_user": settings.container_user,
        "host": host_info,
        "runtime": {
            "kind": runtime_kind,
            "cli": _runtime_cli(svc),
            "project": settings.runtime_project,
            "env": {env_name: socket_dir} if socket_dir else {},
        },
        "members": members,
        "notices": notices,
    }


def write_map(svc: Services, paths: GatewayPaths | None = None) -> bool:
    """Write the helper's map (root only, mode 0600). Returns True when it changed."""
    paths = paths or GatewayPaths.from_settings(svc.settings)
    data = build_map(svc, paths)
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(paths.map.read_text())
    if {k: v for k, v in old.items() if k != "written_at"} == {
        k: v for k, v in data.items() if k != "written_at"
    }:
        return False
    paths.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    _write_atomic(paths.map, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o600)
    return True


def refresh_map(svc: Services) -> bool:
    """Rewrite the map when the gateway is enabled (after a notice, booking or member change).
    Never raises for the gateway's sake: returns False when nothing was written."""
    if not is_enabled(svc.settings):
        return False
    try:
        return write_map(svc)
    except (LabgpuError, OSError):
        return False


# Use cases ----------------------------------------------------------------------------------------


def _store_members(svc: Services) -> dict[str, list[str]]:
    """Every member's name and SSH keys."""
    with svc.session() as session:
        rows = session.scalars(
            select(Member).order_by(Member.name).options(selectinload(Member.ssh_keys))
        ).all()
        return {m.name: [k.public_key for k in m.ssh_keys] for m in rows if m.state != MemberState.REMOVING}


def _install_files(svc: Services, paths: GatewayPaths, report: GatewayReport) -> None:
    for folder, mode in ((paths.dir, 0o755), (paths.keys, 0o755), (paths.home, 0o755)):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, 0, 0)
        folder.chmod(mode)
    # No "Last login" line from sshd; the status comes from the helper.
    _write_atomic(paths.home / ".hushlogin", "", mode=0o644)
    blocked = _world_traversable(paths.keys / "x")
    if blocked is not None:
        raise ConfigError(
            f"members cannot reach their keys in {paths.keys}: {blocked} is closed to other users",
            hint=f"chmod o+x {blocked}, or set gateway_dir to a folder under one every user may enter",
        )
    for what, path, text, mode in (
        ("login program", paths.login, render_login(paths), 0o755),
        ("helper", paths.helper, render_helper(paths), 0o755),
    ):
        changed = _write_atomic(path, text, mode=mode)
        _run(
            [
                str(paths.python),
                "-IS",
                "-c",
                "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')",
                str(path),
            ],
            what=f"checking {path} with {paths.python}",
        )
        report.add(what, CHANGED if changed else UNCHANGED, str(path))

    sudoers = render_sudoers(paths)
    check_sudoers(sudoers, paths.sudoers)
    if paths.sudoers.exists() and not _managed(paths.sudoers):
        raise Conflict(f"{paths.sudoers} exists and was not written by labgpu; move it away first")
    changed = _write_atomic(paths.sudoers, sudoers, mode=0o440)
    report.add(
        "sudoers rule",
        CHANGED if changed else UNCHANGED,
        f"{paths.sudoers}: %{paths.group} may run {paths.helper}",
    )

    dropin = render_sshd_config(paths, password_login=svc.settings.gateway_password_login)
    check_sshd_config(dropin)
    if paths.sshd_config.exists() and not _managed(paths.sshd_config):
        raise Conflict(f"{paths.sshd_config} exists and was not written by labgpu; move it away first")
    changed = _write_atomic(paths.sshd_config, dropin, mode=0o644)
    report.add(
        "sshd drop-in", CHANGED if changed else UNCHANGED, f"{paths.sshd_config}: Match Group {paths.group}"
    )


def _reload_sshd(report: GatewayReport, *, changed: bool) -> None:
    if not changed:
        return
    if systemd_running():
        for unit in ("ssh.service", "sshd.service"):
            done = subprocess.run(
                ["systemctl", "reload", unit], capture_output=True, text=True, timeout=60, check=False
            )
            if done.returncode == 0:
                report.add("sshd reload", CHANGED, f"systemctl reload {unit}")
                return
    report.notes.append(
        "sshd reads its configuration when it starts: reload it now (systemctl reload ssh, or "
        "kill -HUP $(cat /run/sshd.pid) without systemd)"
    )


def sync(svc: Services, report: GatewayReport | None = None) -> GatewayReport:
    """Bring the accounts, their keys and the map in line with the store: an account for every member,
    none for members who are gone. Member accounts that clash with foreign host accounts are reported."""
    report = report or GatewayReport()
    paths = GatewayPaths.from_settings(svc.settings)
    wanted = _store_members(svc)
    for name, keys in wanted.items():
        try:
            ensure_account(paths, name, keys, report, password_login=svc.settings.gateway_password_login)
        except Conflict as exc:
            report.add(f"account {name}", ATTENTION, exc.message)
    for entry in gateway_accounts(paths):
        if entry.pw_name not in wanted:
            remove_account(paths, entry.pw_name, report)
    if write_map(svc, paths):
        report.add("map", CHANGED, f"{paths.map}: {len(wanted)} member(s)")
    return report


def enable(
    svc: Services, *, sshd_main_config: Path = Path("/etc/ssh/sshd_config"), reload: bool = True
) -> GatewayReport:
    """Install the gateway: group, login program, helper, sudoers rule, sshd drop-in, an account for
    every member, the map. Idempotent. Raises ConfigError/Conflict before changing anything it cannot
    finish (missing sudo, unsafe paths, a foreign file in the way)."""
    paths = GatewayPaths.from_settings(svc.settings)
    preflight(svc, paths)
    for path in (paths.sshd_config, paths.sudoers):
        if path.exists() and not _managed(path):
            raise Conflict(f"{path} exists and was not written by labgpu; move it away first")
    report = GatewayReport()
    ensure_group(paths, report)
    _install_files(svc, paths, report)
    sync(svc, report)
    accounts = gateway_accounts(paths)
    if accounts:
        forced = effective_force_command(sshd_main_config, accounts[0].pw_name)
        if forced is not None and forced != str(paths.login):
            report.add(
                "sshd effective config",
                ATTENTION,
                f"sshd would run {forced!r} for {accounts[0].pw_name}, not labgpu-login: make {sshd_main_config} "
                f"Include {paths.sshd_config.parent}/*.conf before any Match block",
            )
        elif forced is not None:
            report.add("sshd effective config", UNCHANGED, f"sshd forces labgpu-login for {paths.group}")
    if reload:
        _reload_sshd(report, changed=report.changed)
    with svc.session() as session:
        svc.audit(session, "gateway.enable", None, group=paths.group, accounts=[a.pw_name for a in accounts])
    return report


def disable(svc: Services, *, reload: bool = True) -> GatewayReport:
    """Remove the gateway: the sshd drop-in first (no new gateway logins), then the sudoers rule, the
    accounts, the map, the keys, the programs and the group. Members' containers and homes are untouched."""
    paths = GatewayPaths.from_settings(svc.settings)
    paths.check()
    report = GatewayReport()
    for what, path in (("sshd drop-in", paths.sshd_config), ("sudoers rule", paths.sudoers)):
        if _managed(path):
            path.unlink()
            report.add(what, REMOVED, str(path))
        elif path.exists():
            report.add(what, ATTENTION, f"{path} was not written by labgpu: left alone")
    for entry in gateway_accounts(paths):
        remove_account(paths, entry.pw_name, report)
    for what, path in (("map", paths.map), ("login program", paths.login), ("helper", paths.helper)):
        if path.exists() and (path == paths.map or _managed(path)):
            path.unlink()
            report.add(what, REMOVED, str(path))
    (paths.home / ".hushlogin").unlink(missing_ok=True)
    for folder in (paths.keys, paths.home, paths.dir):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: anything else someone put there stays
    if _group_gid(paths.group) is not None:
        _run(["groupdel", paths.group], what=f"groupdel {paths.group}")
        report.add("group", REMOVED, paths.group)
    if reload:
        _reload_sshd(report, changed=report.changed)
    with svc.session() as session:
        svc.audit(session, "gateway.disable", None, group=paths.group)
    return report


def add_user(svc: Services, name: str) -> GatewayReport:
    """Create (or repair) the gateway account of one member and refresh the map. Raises NotFound for an
    unknown member, Conflict when a foreign host account has that name, ConfigError when disabled."""
    if not is_enabled(svc.settings):
        raise ConfigError("the login gateway is not enabled", hint="run `labgpu host gateway enable` first")
    keys = _store_members(svc).get(name)
    if keys is None:
        raise NotFound(f"no member named {name}")
    paths = GatewayPaths.from_settings(svc.settings)
    report = GatewayReport()
    ensure_account(paths, name, keys, report, password_login=svc.settings.gateway_password_login)
    write_map(svc, paths)
    if report.changed:
        with svc.session() as session:
            svc.audit(session, "gateway.user.add", name)
    return report


def remove_user(svc: Services, name: str) -> GatewayReport:
    """Delete one member's gateway account (the member and their container stay)."""
    paths = GatewayPaths.from_settings(svc.settings)
    paths.check()
    report = GatewayReport()
    remove_account(paths, name, report)
    if is_enabled(svc.settings):
        write_map(svc, paths)
    if report.changed:
        with svc.session() as session:
            svc.audit(session, "gateway.user.rm", name)
    return report


def on_member_changed(svc: Services, name: str) -> list[str]:
    """The hook for member add/rm/key changes: when the gateway is enabled, give the member an
    account with their current keys (or remove it when the member is gone) and refresh the map.
    Never raises: returns notes to show (e.g. a foreign host account of that name)."""
    if not is_enabled(svc.settings):
        return []
    paths = GatewayPaths.from_settings(svc.settings)
    report = GatewayReport()
    try:
        keys = _store_members(svc).get(name)
        if keys is None:
            remove_account(paths, name, report)
        else:
            ensure_account(paths, name, keys, report, password_login=svc.settings.gateway_password_login)
        write_map(svc, paths)
    except LabgpuError as exc:
        return [f"login gateway: {exc.message}"]
    except OSError as exc:
        return [f"login gateway: {exc}"]
    notes = [f"login gateway: ssh {name}@<host> reaches the container"] if report.changed and keys else []
    notes += [
        f"login gateway password for {n}: {p} (to change at first login)" for n, p in report.passwords.items()
    ]
    return notes


# Status -------------------------------------------------------------------------------------------


@dataclass
class GatewayStatus:
    enabled: bool
    checks: list[Step] = field(default_factory=list)
    accounts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != ATTENTION for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "ok": self.ok,
            "checks": [c.as_dict() for c in self.checks],
            "accounts": self.accounts,
        }


def status(svc: Services, *, sshd_main_config: Path = Path("/etc/ssh/sshd_config")) -> GatewayStatus:
    """What is installed and whether it matches what `enable` would write; every member's account."""
    paths = GatewayPaths.from_settings(svc.settings)
    result = GatewayStatus(enabled=is_enabled(svc.settings))
    add = result.checks.append
    expected = {
        "sshd drop-in": (
            paths.sshd_config,
            render_sshd_config(paths, password_login=svc.settings.gateway_password_login),
        ),
        "sudoers rule": (paths.sudoers, render_sudoers(paths)),
        "login program": (paths.login, render_login(paths)),
        "helper": (paths.helper, render_helper(paths)),
    }
    for what, (path, text) in expected.items():
        if not path.exists():
            add(Step(what, ATTENTION if result.enabled else "absent", f"{path} missing"))
        elif path.read_text() != text:
            add(Step(what, ATTENTION, f"{path} differs from this labgpu's: run `labgpu host gateway enable`"))
        else:
            add(Step(what, "ok", str(path)))
    gid = _group_gid(paths.group)
    add(Step("group", "ok" if gid is not None else (ATTENTION if result.enabled else "absent"), paths.group))
    if paths.map.exists():
        age = datetime.fromtimestamp(paths.map.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M")
        add(Step("map", "ok", f"{paths.map} (written {age})"))
    elif result.enabled:
        add(Step("map", ATTENTION, f"{paths.map} missing: run `labgpu host gateway sync`"))
    members = _store_members(svc) if result.enabled or gid is not None else {}
    mine = {e.pw_name: e for e in gateway_accounts(paths)}
    for name in sorted(set(members) | set(mine)):
        entry = mine.get(name)
        result.accounts.append(
            {
                "name": name,
                "account": entry is not None,
                "uid": entry.pw_uid if entry else None,
                "member": name in members,
                "keys": len(members.get(name, [])),
            }
        )
    if result.enabled and mine:
        first = next(iter(mine))
        forced = effective_force_command(sshd_main_config, first)
        if forced is None:
            add(Step("sshd effective config", "unknown", f"could not run sshd -T on {sshd_main_config}"))
        elif forced != str(paths.login):
            add(
                Step(
                    "sshd effective config",
                    ATTENTION,
                    f"sshd forces {forced!r} for {first}, not labgpu-login",
                )
            )
        else:
            add(Step("sshd effective config", "ok", f"sshd forces labgpu-login for {first}"))
    return result
