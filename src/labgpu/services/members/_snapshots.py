"""Snapshots of a member's container: take, list, restore, delete, with automatic ones rotated.

A snapshot holds the container's root filesystem (what the member installed: packages, conda,
CUDA versions, /etc). It does NOT hold the home folder: that is a host folder mounted into the
container, so it is neither saved nor rolled back; it lives on, untouched, whatever is restored.

Snapshots that labgpu names itself (``snap-YYYYMMDD-HHMMSS``) are "automatic": after a new one, the
oldest beyond ``settings.snapshots_keep`` are deleted. A snapshot given a name is the admin's or
member's deliberate choice and is only deleted on request. Snapshots made with ``lxc snapshot`` /
``incus snapshot`` follow the same rule by their names.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from labgpu.errors import BadInput, Conflict, NotFound
from labgpu.services.context import Services
from labgpu.services.members._apply import apply_spec, owned_instance
from labgpu.services.members._keys import install_keys
from labgpu.services.members._records import load_member, member_services
from labgpu.store.models import MemberState, utcnow

AUTOMATIC_RE = re.compile(r"^snap-(\d{8}-\d{6})(?:-(\d+))?$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
_TIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?")
HOME_NOTE = "the home folder is not in snapshots: it lives on the host and is never rolled back"


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    created_at: str
    automatic: bool
    stateful: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SnapshotInfo:
        # Some daemon versions answer "instance/snapshot" as the name.
        name = str(data.get("name", "")).rsplit("/", 1)[-1]
        return cls(
            name=name,
            created_at=str(data.get("created_at") or ""),
            automatic=is_automatic(name),
            stateful=bool(data.get("stateful")),
        )


def is_automatic(name: str) -> bool:
    return AUTOMATIC_RE.match(name) is not None


def validate_snapshot_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise BadInput(
            f"invalid snapshot name {name[:70]!r}: use 1-63 letters, digits, dots, hyphens and "
            "underscores, starting with a letter or digit"
        )
    return name


def automatic_name(now: datetime, taken: Collection[str]) -> str:
    """``snap-YYYYMMDD-HHMMSS`` in UTC, with ``-2``, ``-3``... when that second is taken."""
    stem = "snap-" + now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name


def _sort_key(snap: SnapshotInfo) -> tuple[str, str, int, str]:
    # created_at has up to nine fraction digits: compare the seconds, then the fraction as a number
    # of nanoseconds (plain string order gets "…20.43Z" and "…20.429485431Z" wrong).
    m = _TIME_RE.match(snap.created_at)
    seconds, fraction = (m.group(1), (m.group(2) or "").ljust(9, "0")[:9]) if m else ("", "")
    auto = AUTOMATIC_RE.match(snap.name)
    suffix = int(auto.group(2) or 1) if auto else 0
    return (seconds, fraction, suffix, snap.name)


def oldest_first(snapshots: Sequence[SnapshotInfo]) -> list[SnapshotInfo]:
    return sorted(snapshots, key=_sort_key)


def to_prune(snapshots: Sequence[SnapshotInfo], keep: int) -> list[str]:
    """The automatic snapshots to delete so that ``keep`` remain (oldest first); none when keep is 0."""
    if keep <= 0:
        return []
    automatic = [s for s in oldest_first(snapshots) if s.automatic]
    return [s.name for s in automatic[: max(0, len(automatic) - keep)]]


def container_of(svc: Services, name: str, *, changing: bool) -> str:
    """The name of ``name``'s container (``svc`` must talk to its host). Raises NotFound, Conflict (with
    ``changing``: the member is being provisioned or removed)."""
    with svc.session() as session:
        member = load_member(session, name)
        state, container = member.state, member.container
    if changing and state in (MemberState.PROVISIONING, MemberState.REMOVING):
        raise Conflict(f"member {name} is {state}; finish that first (`labgpu reconcile`)")
    if owned_instance(svc, name, container) is None or container is None:
        raise NotFound(f"{name} has no container", hint="`labgpu reconcile` recreates it")
    return container


def list_snapshots(svc: Services, name: str) -> list[SnapshotInfo]:
    """The member's container's snapshots, oldest first. Raises NotFound."""
    svc = member_services(svc, name)  # the daemon of the member's host
    container = container_of(svc, name, changing=False)
    return oldest_first([SnapshotInfo.from_api(d) for d in svc.runtime.instances.snapshots(container)])


@dataclass(frozen=True)
class Taken:
    snapshot: SnapshotInfo
    pruned: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**self.snapshot.as_dict(), "pruned": list(self.pruned), "note": HOME_NOTE}


def take_snapshot(svc: Services, name: str, snapshot: str | None = None) -> Taken:
    """Snapshot the member's container (running or not), then delete the oldest automatic snapshots
    beyond ``snapshots_keep``. Waits. Audit ``member.snapshot``. Raises BadInput (name), NotFound,
    Conflict (name taken)."""
    if snapshot is not None:
        validate_snapshot_name(snapshot)
    svc = member_services(svc, name)  # the daemon of the member's host
    container = container_of(svc, name, changing=True)
    runtime = svc.runtime
    existing = [SnapshotInfo.from_api(d) for d in runtime.instances.snapshots(container)]
    taken = {s.name for s in existing}
    if snapshot is None:
        snapshot = automatic_name(utcnow(), taken)
    elif snapshot in taken:
        raise Conflict(f"{name} already has a snapshot named {snapshot}")
    runtime.instances.create_snapshot(container, snapshot)
    with svc.session() as session:
        svc.audit(session, "member.snapshot", name, snapshot=snapshot)
    after = [SnapshotInfo.from_api(d) for d in runtime.instances.snapshots(container)]
    pruned = to_prune(after, svc.settings.snapshots_keep)
    for old in pruned:
        runtime.instances.delete_snapshot(container, old)
    if pruned:
        with svc.session() as session:
            svc.audit(
                session, "member.snapshot.prune", name, snapshots=pruned, keep=svc.settings.snapshots_keep
            )
    info = next((s for s in after if s.name == snapshot), SnapshotInfo(snapshot, "", is_automatic(snapshot)))
    return Taken(info, tuple(pruned))


def restore_snapshot(svc: Services, name: str, snapshot: str) -> str:
    """Roll the member's container back to ``snapshot``; return its status afterwards.

    The daemon restores the snapshot's config and devices too; labgpu then puts back the CURRENT
    desired ones (limits, ports, shares, GPUs from the store) and re-installs the SSH keys, so a
    restore changes only the root filesystem. A running container is restarted by the restore.
    Waits. Audit ``member.restore``. Raises NotFound (no such snapshot), Conflict."""
    validate_snapshot_name(snapshot)
    svc = member_services(svc, name)  # the daemon of the member's host
    container = container_of(svc, name, changing=True)
    runtime = svc.runtime
    names = [SnapshotInfo.from_api(d).name for d in runtime.instances.snapshots(container)]
    if snapshot not in names:
        raise NotFound(
            f"{name} has no snapshot {snapshot}",
            hint=f"snapshots: {', '.join(names)}"
            if names
            else f"take one with `labgpu member snapshot {name}`",
        )
    with svc.session() as session:
        svc.audit(session, "member.restore", name, snapshot=snapshot)
    runtime.instances.restore_snapshot(container, snapshot)
    apply_spec(svc, name)
    status = runtime.instances.state(container).status
    if status == "Running":
        with svc.session() as session:
            keys = [k.public_key for k in load_member(session, name).ssh_keys]
        install_keys(svc, container, keys)
    return status


def delete_snapshot(svc: Services, name: str, snapshot: str) -> None:
    """Delete one snapshot of the member's container. Waits. Raises NotFound."""
    validate_snapshot_name(snapshot)
    svc = member_services(svc, name)  # the daemon of the member's host
    container = container_of(svc, name, changing=False)
    names = [SnapshotInfo.from_api(d).name for d in svc.runtime.instances.snapshots(container)]
    if snapshot not in names:
        raise NotFound(f"{name} has no snapshot {snapshot}")
    svc.runtime.instances.delete_snapshot(container, snapshot)
    with svc.session() as session:
        svc.audit(session, "member.snapshot.rm", name, snapshot=snapshot)
