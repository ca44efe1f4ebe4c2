"""A new container's SSH keys and login policy, written while it boots.

A container that was just started is still booting: sshd answers a second or more later. The daemon's file
API writes into its root filesystem meanwhile (LXD and Incus alike; no process is started in the
container), so the keys and the sudo rule are in place by the time sshd answers: ``member add`` is done when
SSH is ready, and the writing costs no time of its own. members._keys and members._login do the same with
one exec each once sshd answers: for a container that already existed, and as the fallback here.

Not while an image with cloud-init boots: cloud-init rewrites ``authorized_keys`` at its first boot
(reading it, then writing it back: a key written in between would be lost) and locks the default user's
password. sshd starts after cloud-init, so those containers get their keys and password after sshd answers,
as before.

The files are the same as those the exec path writes: ``~/.ssh`` (0700) and ``authorized_keys`` (0600,
labgpu's block; lines the image had are kept) owned by the user, and the sudo rule (0440, root).

The initial password of a member without a key is NOT set while the container boots: first-boot services
may rewrite /etc/shadow then (cloud-init locks the default user's password; systemd-sysusers and
systemd-firstboot add accounts and root's password). sshd starts after them, so the password is set once
sshd answers, as before (one exec)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from labgpu.errors import LabgpuError
from labgpu.runtime.errors import RuntimeError_, RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.members._keys import MAX_AUTHORIZED_KEYS, merged_authorized_keys
from labgpu.services.members._login import SUDOERS_FILE, sudo_rule

log = logging.getLogger(__name__)

#: /etc/passwd and /etc/shadow bigger than this are not read (they are not an image's).
MAX_ACCOUNTS_FILE = 1024 * 1024


def _read(svc: Services, container: str, path: str, limit: int) -> str | None:
    try:
        data = svc.runtime.instances.pull_file(container, path)
    except RuntimeNotFound:
        return None
    return data.decode("utf-8", errors="replace") if len(data) <= limit else None


def _exists(svc: Services, container: str, path: str) -> bool:
    try:
        svc.runtime.instances.pull_file(container, path)
    except RuntimeNotFound:
        return False
    except RuntimeError_:
        return True  # a folder, say
    return True


def _account(text: str | None, user: str) -> list[str] | None:
    for line in (text or "").splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields
    return None


CLOUD_INIT = "/usr/bin/cloud-init"


def write_while_booting(svc: Services, container: str, keys: Sequence[str]) -> bool:
    """Write the member's SSH keys and the login policy (sudo rule) into ``container``, which was just
    created and started. Returns True when done; False when this way does not apply and the exec path
    must do it once sshd answers: the image has cloud-init, has no such user, or the user has an initial
    password nobody has used yet (install_keys drops it), or the daemon refused a request (a container
    that stops at boot is then reported by the wait for sshd, with its status)."""
    try:
        return _write(svc, container, keys)
    except LabgpuError as exc:
        log.info("%s: keys left for after sshd answers (%s)", container, exc.message)
        return False


def _write(svc: Services, container: str, keys: Sequence[str]) -> bool:
    user = svc.settings.container_user
    runtime = svc.runtime
    if _exists(svc, container, CLOUD_INIT):
        return False
    account = _account(_read(svc, container, "/etc/passwd", MAX_ACCOUNTS_FILE), user)
    if account is None or len(account) < 6 or not (account[2].isdigit() and account[3].isdigit()):
        return False
    uid, gid, home = int(account[2]), int(account[3]), f"/home/{user}"
    has_key = any(k.strip() for k in keys)
    if has_key:
        shadow = _account(_read(svc, container, "/etc/shadow", MAX_ACCOUNTS_FILE), user)
        if shadow is None or (len(shadow) > 2 and shadow[2] == "0"):
            return False
    try:
        # An existing folder is left as the image made it; the daemon creates a missing one.
        runtime.instances.make_dir(container, f"{home}/.ssh", uid=uid, gid=gid, mode=0o700)
    except RuntimeNotFound:
        return False  # no home folder in the image: the exec path says so clearly
    path = f"{home}/.ssh/authorized_keys"
    current = _read(svc, container, path, MAX_AUTHORIZED_KEYS)
    runtime.instances.push_file(
        container, path, merged_authorized_keys(current, keys).encode(), uid=uid, gid=gid, mode=0o600
    )
    # No /etc/sudoers.d (no sudo in the image): the login script skips the rule too.
    with contextlib.suppress(RuntimeNotFound):
        if svc.settings.container_sudo_nopasswd:
            runtime.instances.push_file(container, SUDOERS_FILE, sudo_rule(user).encode(), mode=0o440)
        else:
            runtime.instances.delete_file(container, SUDOERS_FILE)
    return True
