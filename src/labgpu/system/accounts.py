"""Host accounts of the login gateway: a group, one account per member (useradd/usermod/userdel) and
each account's root-owned authorized_keys file.

An account is labgpu's when its comment field starts with :data:`GECOS_PREFIX` and its primary group is
the gateway group; nothing here changes or deletes any other account.
"""

from __future__ import annotations

import grp
import pwd
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from labgpu.errors import Conflict, LabgpuError
from labgpu.system.commands import run
from labgpu.system.files import MARKER, write_atomic

GECOS_PREFIX = "labgpu gateway account of "
KEY_OPTIONS = "restrict,pty"


@dataclass(frozen=True)
class AccountChange:
    """What :func:`ensure_account` did: ``account`` is "created", "changed" or None (already right)."""

    account: str | None = None
    keys_changed: bool = False
    password: str | None = None  # the new account's first password (password logins only), shown once


def group_gid(group: str) -> int | None:
    """The gid of ``group``, or None when the host has no such group."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def is_gateway_account(entry: pwd.struct_passwd, gid: int | None) -> bool:
    return entry.pw_gecos.startswith(GECOS_PREFIX) and gid is not None and entry.pw_gid == gid


def gateway_accounts(group: str) -> list[pwd.struct_passwd]:
    """The host accounts labgpu made for the gateway (marked in their comment field, in the group)."""
    gid = group_gid(group)
    return sorted((e for e in pwd.getpwall() if is_gateway_account(e, gid)), key=lambda e: e.pw_name)


def account_uid(name: str) -> int | None:
    """The uid of the host account ``name``, or None."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def ensure_group(group: str) -> bool:
    """Create the system group ``group`` unless it exists; returns True when it was created."""
    if group_gid(group) is not None:
        return False
    run(["groupadd", "--system", group], what=f"groupadd {group}")
    return True


def remove_group(group: str) -> bool:
    """Delete ``group`` when it exists; returns True when it was deleted."""
    if group_gid(group) is None:
        return False
    run(["groupdel", group], what=f"groupdel {group}")
    return True


def authorized_keys_text(keys: Sequence[str]) -> str:
    """The gateway account's authorized_keys: the member's keys, each restricted to a session with a tty."""
    lines = [f"{KEY_OPTIONS} {k.strip()}" for k in keys if k.strip()]
    header = f"{MARKER}: the keys of this member in the store (`labgpu member key`); rewritten on changes.\n"
    return header + "".join(line + "\n" for line in lines)


def ensure_account(
    name: str,
    *,
    group: str,
    home: Path,
    shell: Path,
    keys_file: Path,
    keys: Sequence[str],
    password_login: bool,
) -> AccountChange:
    """Create (or bring back to shape) the member's gateway account and write their keys to ``keys_file``.

    Raises Conflict when a host account of that name exists and is not labgpu's, LabgpuError when the
    group is missing or useradd/usermod fail."""
    gid = group_gid(group)
    if gid is None:
        raise LabgpuError(f"group {group} is missing; run `labgpu host gateway enable`")
    try:
        entry: pwd.struct_passwd | None = pwd.getpwnam(name)
    except KeyError:
        entry = None
    if entry is not None and not is_gateway_account(entry, gid):
        raise Conflict(
            f"the host already has an account named {name} that is not labgpu's gateway account",
            hint=f"{name} can still use the direct SSH port; rename the host account to use the gateway",
        )
    account: str | None = None
    password: str | None = None
    if entry is None:
        run(
            [
                "useradd",
                "--no-create-home",
                "--home-dir", str(home),
                "--shell", str(shell),
                "--gid", group,
                "--comment", GECOS_PREFIX + name,
                "--password", "*",  # no usable password: not locked (sshd refuses locked accounts without PAM)
                "-K", "SUB_UID_COUNT=0",
                "-K", "SUB_GID_COUNT=0",
                name,
            ],
            what=f"useradd {name}",
        )  # fmt: skip
        account = "created"
        if password_login:
            password = secrets.token_urlsafe(12)
            run(["chpasswd"], input_text=f"{name}:{password}\n", what=f"setting {name}'s password")
            run(["chage", "-d", "0", name], what=f"expiring {name}'s password")
    elif entry.pw_shell != str(shell) or entry.pw_dir != str(home):
        run(["usermod", "--shell", str(shell), "--home", str(home), name], what=f"usermod {name}")
        account = "changed"
    keys_changed = write_atomic(keys_file, authorized_keys_text(keys), mode=0o644)
    return AccountChange(account=account, keys_changed=keys_changed, password=password)


def remove_account(name: str, *, group: str, keys_file: Path) -> tuple[bool, bool]:
    """Delete the member's gateway account and keys file (never anything else: no home, no other
    account). Returns (account deleted, keys file deleted)."""
    gid = group_gid(group)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = None
    removed = entry is not None and is_gateway_account(entry, gid)
    if removed:
        run(["userdel", name], what=f"userdel {name}")
    keys_removed = keys_file.exists()
    if keys_removed:
        keys_file.unlink()
    return removed, keys_removed
