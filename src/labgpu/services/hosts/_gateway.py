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
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu.errors import ConfigError, Conflict, LabgpuError, NotFound
from labgpu.gateway import helper as helper_module
from labgpu.gateway import login as login_module
from labgpu.services.context import Services
from labgpu.services.hosts._gateway_map import write_map
from labgpu.services.hosts._gateway_paths import (
    ATTENTION,
    CHANGED,
    CREATED,
    REMOVED,
    UNCHANGED,
    GatewayPaths,
    GatewayReport,
    Step,
    is_enabled,
    runtime_cli,
)
from labgpu.store.models import Member, MemberState
from labgpu.system import accounts, programs, sshd, sudoers
from labgpu.system.commands import which
from labgpu.system.files import ensure_root_folder, is_managed, unsafe_parent, world_traversable, write_atomic

# What is written ----------------------------------------------------------------------------------


def render_sshd_config(paths: GatewayPaths, *, password_login: bool) -> str:
    """The sshd_config drop-in: one Match block for the gateway group."""
    return sshd.render_gateway_dropin(
        group=paths.group, force_command=paths.login, keys_dir=paths.keys, password_login=password_login
    )


def render_sudoers(paths: GatewayPaths) -> str:
    """The sudoers drop-in: the gateway group may run the helper as root, without a password, and nothing else."""
    return sudoers.render_gateway_rule(group=paths.group, helper=paths.helper)


def render_login(paths: GatewayPaths) -> str:
    return programs.render_script(
        login_module.__file__,
        python=paths.python,
        call=f"main(helper={str(paths.helper)!r}, sudo={sudoers.sudo_path()!r})",
    )


def render_helper(paths: GatewayPaths) -> str:
    return programs.render_script(
        helper_module.__file__, python=paths.python, call=f"main(map_path={str(paths.map)!r})"
    )


# Checks before anything is changed ----------------------------------------------------------------


def preflight(svc: Services, paths: GatewayPaths) -> None:
    """Refuse to enable the gateway where it could not work or would not be safe. Raises ConfigError."""
    paths.check()
    if not svc.runtime.endpoint.is_unix:
        raise ConfigError(
            "the login gateway needs the local LXD/Incus daemon (runtime_url is not a unix socket)"
        )
    for tool in ("sudo", "visudo", "useradd", "userdel", "groupadd", "usermod"):
        if which(tool) is None:
            raise ConfigError(f"{tool} is not installed", hint="apt install sudo passwd")
    if sshd.sshd_path() is None:
        raise ConfigError("sshd is not installed", hint="apt install openssh-server")
    runtime_cli(svc)
    if not paths.python.is_file():
        raise ConfigError(f"gateway_python {paths.python} does not exist", hint="apt install python3")
    blocked = world_traversable(paths.python)
    if blocked is not None or not paths.python.resolve().stat().st_mode & stat.S_IXOTH:
        raise ConfigError(
            f"members cannot run gateway_python {paths.python} ({blocked or 'not executable'} is closed to them)",
            hint="set gateway_python to an interpreter every user may run, e.g. /usr/bin/python3",
        )
    version = programs.python_version(paths.python)
    if version < (3, 8):
        raise ConfigError(
            f"gateway_python {paths.python} is Python {'.'.join(map(str, version))}; 3.8 or later is needed"
        )
    for what, path in (("gateway_helper", paths.helper), ("gateway_login_command", paths.login)):
        unsafe = unsafe_parent(path)
        if unsafe is not None:
            raise ConfigError(
                f"{what} {path}: the folder {unsafe} may be changed by users other than root",
                hint="choose a place only root can write, such as /usr/local/lib/labgpu",
            )


# Accounts -----------------------------------------------------------------------------------------


def gateway_accounts(paths: GatewayPaths) -> list[pwd.struct_passwd]:
    """The host accounts labgpu made for the gateway (marked in their comment field, in the group)."""
    return accounts.gateway_accounts(paths.group)


def ensure_group(paths: GatewayPaths, report: GatewayReport) -> None:
    if accounts.ensure_group(paths.group):
        report.add("group", CREATED, f"group {paths.group}")
    else:
        report.add("group", UNCHANGED, f"group {paths.group} exists")


def ensure_account(
    paths: GatewayPaths, name: str, keys: Sequence[str], report: GatewayReport, *, password_login: bool
) -> None:
    """Create (or bring back to shape) the member's gateway account and write their keys.

    Raises Conflict when a host account of that name exists and is not labgpu's."""
    change = accounts.ensure_account(
        name,
        group=paths.group,
        home=paths.home,
        shell=paths.login,
        keys_file=paths.keys / name,
        keys=keys,
        password_login=password_login,
    )
    if change.account == "created":
        report.add(
            f"account {name}", CREATED, f"host account {name} (group {paths.group}, shell labgpu-login)"
        )
    elif change.account == "changed":
        report.add(f"account {name}", CHANGED, "shell and home put back")
    if change.password is not None:
        report.passwords[name] = change.password
    if change.keys_changed:
        report.add(f"keys {name}", CHANGED, f"{len(keys)} key(s) in {paths.keys / name}")


def remove_account(paths: GatewayPaths, name: str, report: GatewayReport) -> None:
    """Delete the member's gateway account (never anything else: no home, no other account)."""
    key_file = paths.keys / name
    account_removed, keys_removed = accounts.remove_account(name, group=paths.group, keys_file=key_file)
    if account_removed:
        report.add(f"account {name}", REMOVED, "gateway account deleted")
    if keys_removed:
        report.add(f"keys {name}", REMOVED, str(key_file))


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
        ensure_root_folder(folder, mode=mode)
    # No "Last login" line from sshd; the status comes from the helper.
    write_atomic(paths.home / ".hushlogin", "", mode=0o644)
    blocked = world_traversable(paths.keys / "x")
    if blocked is not None:
        raise ConfigError(
            f"members cannot reach their keys in {paths.keys}: {blocked} is closed to other users",
            hint=f"chmod o+x {blocked}, or set gateway_dir to a folder under one every user may enter",
        )
    for what, path, text, mode in (
        ("login program", paths.login, render_login(paths), 0o755),
        ("helper", paths.helper, render_helper(paths), 0o755),
    ):
        changed = write_atomic(path, text, mode=mode)
        programs.check_compiles(paths.python, path)
        report.add(what, CHANGED if changed else UNCHANGED, str(path))

    rule = render_sudoers(paths)
    sudoers.check_sudoers(rule, paths.sudoers)
    if paths.sudoers.exists() and not is_managed(paths.sudoers):
        raise Conflict(f"{paths.sudoers} exists and was not written by labgpu; move it away first")
    changed = write_atomic(paths.sudoers, rule, mode=0o440)
    report.add(
        "sudoers rule",
        CHANGED if changed else UNCHANGED,
        f"{paths.sudoers}: %{paths.group} may run {paths.helper}",
    )

    dropin = render_sshd_config(paths, password_login=svc.settings.gateway_password_login)
    sshd.check_sshd_config(dropin)
    if paths.sshd_config.exists() and not is_managed(paths.sshd_config):
        raise Conflict(f"{paths.sshd_config} exists and was not written by labgpu; move it away first")
    changed = write_atomic(paths.sshd_config, dropin, mode=0o644)
    report.add(
        "sshd drop-in", CHANGED if changed else UNCHANGED, f"{paths.sshd_config}: Match Group {paths.group}"
    )


def _reload_sshd(report: GatewayReport, *, changed: bool) -> None:
    if not changed:
        return
    unit = sshd.reload_sshd()
    if unit is not None:
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
        if path.exists() and not is_managed(path):
            raise Conflict(f"{path} exists and was not written by labgpu; move it away first")
    report = GatewayReport()
    ensure_group(paths, report)
    _install_files(svc, paths, report)
    sync(svc, report)
    made = gateway_accounts(paths)
    if made:
        forced = sshd.effective_force_command(sshd_main_config, made[0].pw_name)
        if forced is not None and forced != str(paths.login):
            report.add(
                "sshd effective config",
                ATTENTION,
                f"sshd would run {forced!r} for {made[0].pw_name}, not labgpu-login: make {sshd_main_config} "
                f"Include {paths.sshd_config.parent}/*.conf before any Match block",
            )
        elif forced is not None:
            report.add("sshd effective config", UNCHANGED, f"sshd forces labgpu-login for {paths.group}")
    if reload:
        _reload_sshd(report, changed=report.changed)
    with svc.session() as session:
        svc.audit(session, "gateway.enable", None, group=paths.group, accounts=[a.pw_name for a in made])
    return report


def disable(svc: Services, *, reload: bool = True) -> GatewayReport:
    """Remove the gateway: the sshd drop-in first (no new gateway logins), then the sudoers rule, the
    accounts, the map, the keys, the programs and the group. Members' containers and homes are untouched."""
    paths = GatewayPaths.from_settings(svc.settings)
    paths.check()
    report = GatewayReport()
    for what, path in (("sshd drop-in", paths.sshd_config), ("sudoers rule", paths.sudoers)):
        if is_managed(path):
            path.unlink()
            report.add(what, REMOVED, str(path))
        elif path.exists():
            report.add(what, ATTENTION, f"{path} was not written by labgpu: left alone")
    for entry in gateway_accounts(paths):
        remove_account(paths, entry.pw_name, report)
    for what, path in (("map", paths.map), ("login program", paths.login), ("helper", paths.helper)):
        if path.exists() and (path == paths.map or is_managed(path)):
            path.unlink()
            report.add(what, REMOVED, str(path))
    (paths.home / ".hushlogin").unlink(missing_ok=True)
    for folder in (paths.keys, paths.home, paths.dir):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: anything else someone put there stays
    if accounts.remove_group(paths.group):
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
    gid = accounts.group_gid(paths.group)
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
        forced = sshd.effective_force_command(sshd_main_config, first)
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
