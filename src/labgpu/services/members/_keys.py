"""Members' SSH keys: reading, installing in the container, adding and removing; the login gateway follows."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from labgpu.domain.members import PublicKey, parse_public_key
from labgpu.errors import N_, BadInput, NotFound
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services import hosts as hosts_svc
from labgpu.services.context import Services
from labgpu.services.hosts import services_for
from labgpu.services.members._records import ProvisionError, load_member
from labgpu.store.models import SshKey

log = logging.getLogger(__name__)


def read_keys(texts: Sequence[str]) -> tuple[PublicKey, ...]:
    """Parse public keys given as file contents (one or more lines each; comments and blanks skipped)."""
    keys: dict[str, PublicKey] = {}
    for text in texts:
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key = parse_public_key(line)
                keys.setdefault(key.fingerprint, key)
    return tuple(keys.values())


def gateway_changed(svc: Services, name: str) -> list[str]:
    """Keep the login gateway (when enabled) in step with a member who was added, removed or whose keys
    changed: their host account, key file and the map. Never raises; returns notes to show (and logs
    them: the portal shows none)."""
    notes = hosts_svc.on_member_changed(svc, name)
    for note in notes:
        if "password" not in note:  # a gateway password is shown once, never logged
            log.info("%s", note)
    return notes


# authorized_keys holds labgpu's keys in one block; lines outside it are the member's own (ssh-copy-id, an
# editor) and are kept. A file without the block was written whole by an older labgpu: it is replaced whole,
# so a key an admin removed cannot survive as an "own" line.
KEYS_BEGIN = "# labgpu: the keys below come from the portal and `labgpu member key`; change them there"
KEYS_END = "# labgpu: end of its keys; lines outside this block are yours and are kept"
# A member's own part larger than this is not read back (the portal would hold it in memory): replaced whole.
MAX_AUTHORIZED_KEYS = 256 * 1024


def merged_authorized_keys(current: str | None, keys: Sequence[str]) -> str:
    """The new authorized_keys: the member's own lines of ``current`` (those outside labgpu's block, when it
    has one), then labgpu's block with ``keys``."""
    own: list[str] = []
    lines = (current or "").splitlines()
    if KEYS_BEGIN in lines:
        inside = False
        for line in lines:
            if line == KEYS_BEGIN:
                inside = True
            elif line == KEYS_END and inside:
                inside = False
            elif not inside:
                own.append(line)
    while own and not own[-1].strip():
        own.pop()
    block = [KEYS_BEGIN, *(k.strip() for k in keys if k.strip()), KEYS_END]
    return "\n".join([*own, *block]) + "\n"


# $1 user, $2 "1" to drop an initial password nobody has used yet (still expired: its last change is day 0).
# Prints the user's uid, then the size of authorized_keys ("-" when there is none).
PREPARE_KEYS_SCRIPT = r"""
user="$1"; drop="$2"; dir="/home/$user/.ssh"
install -d -m 700 -o "$user" -g "$user" "$dir" || exit 1
if [ "$drop" = 1 ] && [ "$(getent shadow "$user" | cut -d: -f3)" = 0 ]; then
  usermod -p '!' "$user" && chage -d "$(($(date +%s) / 86400))" "$user" || exit 1
fi
id -u "$user" || exit 1
stat -L -c %s "$dir/authorized_keys" 2>/dev/null || echo -
"""


def install_keys(svc: Services, container: str, keys: Sequence[str]) -> None:
    """Write the member's SSH keys into the container user's authorized_keys, keeping the lines the member
    added there themselves (see :func:`merged_authorized_keys`). The container must be running.

    With a key, an initial password nobody has used yet is dropped: expired, it would hold up the key's
    logins ("Password change required but no TTY available"), and a member with a key needs no admin-known
    password (members._login)."""
    user = svc.settings.container_user
    runtime = svc.runtime
    path = f"/home/{user}/.ssh/authorized_keys"
    drop = "1" if any(k.strip() for k in keys) else "0"
    prepared = runtime.instances.exec(container, ["sh", "-c", PREPARE_KEYS_SCRIPT, "sh", user, drop])
    lines = prepared.stdout.split()
    if not prepared.ok or len(lines) != 2 or not lines[0].isdigit():
        raise ProvisionError(f"preparing {path} in {container} failed: {prepared.stderr.strip()[:200]}")
    uid, size = int(lines[0]), lines[1]
    current = None
    if size.isdigit() and int(size) <= MAX_AUTHORIZED_KEYS:
        try:
            current = runtime.instances.pull_file(container, path).decode("utf-8", errors="replace")
        except RuntimeNotFound:
            current = None
    text = merged_authorized_keys(current, keys)
    runtime.instances.push_file(container, path, text.encode(), uid=uid, gid=uid, mode=0o600)


def add_keys(svc: Services, name: str, key_texts: Sequence[str]) -> list[str]:
    """Add SSH public keys (skipping ones already there) and install them. Returns the new fingerprints."""
    keys = read_keys(key_texts)
    if not keys:
        raise BadInput(N_("no public key given"))
    with svc.session() as session:
        member = load_member(session, name)
        have = {k.fingerprint for k in member.ssh_keys}
        added = []
        for key in keys:
            if key.fingerprint not in have:
                member.ssh_keys.append(
                    SshKey(public_key=key.line, fingerprint=key.fingerprint, comment=key.comment or None)
                )
                added.append(key.fingerprint)
        svc.audit(session, "member.key.add", name, fingerprints=added)
        all_keys = [k.public_key for k in member.ssh_keys]
        container = member.container or name
        host_svc = services_for(svc, member.host)
    _install_if_running(host_svc, container, all_keys)
    gateway_changed(svc, name)
    return added


def remove_key(svc: Services, name: str, fingerprint_or_comment: str) -> str:
    """Remove one SSH key by fingerprint (or unique comment). Returns its fingerprint. Raises NotFound."""
    with svc.session() as session:
        member = load_member(session, name)
        matches = [k for k in member.ssh_keys if fingerprint_or_comment in (k.fingerprint, k.comment)]
        if not matches:
            raise NotFound(f"{name} has no key {fingerprint_or_comment}")
        if len(matches) > 1:
            raise BadInput(f"{fingerprint_or_comment!r} matches several keys; give the fingerprint")
        member.ssh_keys.remove(matches[0])
        svc.audit(session, "member.key.rm", name, fingerprint=matches[0].fingerprint)
        all_keys = [k.public_key for k in member.ssh_keys if k is not matches[0]]
        container = member.container or name
        host_svc = services_for(svc, member.host)
    _install_if_running(host_svc, container, all_keys)
    gateway_changed(svc, name)
    return matches[0].fingerprint


def list_keys(svc: Services, name: str) -> list[dict[str, str]]:
    with svc.session() as session:
        member = load_member(session, name)
        return [
            {"fingerprint": k.fingerprint, "comment": k.comment or "", "key": k.public_key}
            for k in member.ssh_keys
        ]


def _install_if_running(svc: Services, container: str, keys: list[str]) -> None:
    # A stopped container gets its keys from the store when it is started (members.set_power), reset or
    # restored.
    try:
        if svc.runtime.instances.state(container).status == "Running":
            install_keys(svc, container, keys)
    except RuntimeNotFound:
        pass
