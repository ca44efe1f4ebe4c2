"""A member's container after it exists: change it (set), rebuild it (reset), remove it (rm).

Every change follows the design's rule: write the desired state in the store first (one
transaction, with an audit event), then bring the container to it. Steps that destroy something
(deleting a container) happen only after the store says what should come next, so a crash at any
point is finished by running the same command again (or ``labgpu reconcile``):

- ``reset`` marks the member ``provisioning`` before it deletes the container; provisioning again
  recreates it from the store (home, ports and keys kept).
- ``rm`` marks the member ``removing`` before it deletes anything; the row, and with it the ports,
  goes last.
- ``set`` changes the row and then updates the container in ONE request; when the daemon refuses the
  change, the row is put back, so nothing is left half-made.

Snapshots live in :mod:`labgpu.services.members._snapshots`; they re-use :func:`apply_spec` here.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labgpu.domain.container import CONTAINER_PORTS, check_safe, missing_gpus
from labgpu.domain.members import (
    allocate_ports,
    format_size,
    parse_gpu_request,
    parse_size,
    validate_cpu,
)
from labgpu.errors import BadInput, Conflict, LabgpuError, NotFound
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.runtime.instances import Instance
from labgpu.services.context import Services
from labgpu.services.hosts import local_host
from labgpu.services.members._keys import gateway_changed
from labgpu.services.members._provision import checkpoint, provision
from labgpu.services.members._records import (
    ConnectionSheet,
    allowed_roots,
    container_spec,
    home_dir,
    host_gpus,
    load_member,
    member_services,
)
from labgpu.store.db import violated_constraint
from labgpu.store.models import Member, MemberState, PortMap, PortPurpose, Share, utcnow

# How a change reached the container.
APPLIED_LIVE = "live"
APPLIED_NEXT_START = "at next start"
APPLIED_WHEN_CREATED = "when the container is created (labgpu reconcile)"

# Config keys labgpu may remove from a member's container when the spec leaves them out (a limit
# set back to the profile's default).
MANAGED_OPTIONAL_KEYS = ("limits.cpu", "limits.memory")
# Instance-level devices that belong to labgpu. "root" is one only when labgpu gave it a size.
MANAGED_DEVICE_PREFIXES = ("labgpu-", "share-")
_ALLOCATION_RETRIES = 5


# The container from the store ---------------------------------------------------------------------


def _managed_device(name: str, device: Mapping[str, str]) -> bool:
    if name.startswith(MANAGED_DEVICE_PREFIXES):
        return True
    return name == "root" and device.get("path") == "/" and "size" in device


def desired_patch(
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
    current_config: Mapping[str, str],
    current_devices: Mapping[str, Mapping[str, str]],
) -> tuple[dict[str, str | None], dict[str, dict[str, str] | None]]:
    """The smallest update that brings an instance's config and devices to the spec's.

    A value of None removes the key or device. Only what labgpu manages is removed: optional
    limits, devices named ``labgpu-*`` and ``share-*``, and a root disk with a size."""
    config_patch: dict[str, str | None] = {k: v for k, v in config.items() if current_config.get(k) != v}
    for key in MANAGED_OPTIONAL_KEYS:
        if key not in config and key in current_config:
            config_patch[key] = None
    device_patch: dict[str, dict[str, str] | None] = {
        name: dict(dev) for name, dev in devices.items() if dict(current_devices.get(name) or {}) != dict(dev)
    }
    for name, dev in current_devices.items():
        if name not in devices and _managed_device(name, dev):
            device_patch[name] = None
    return config_patch, device_patch


def _merged(current: Mapping[str, Any], patch: Mapping[str, Any | None]) -> dict[str, Any]:
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def owned_instance(svc: Services, member: str, container: str | None) -> Instance | None:
    """The member's container, or None when it does not exist.

    Raises Conflict when an instance of that name exists but is not marked as this member's
    (``user.labgpu.owner``): labgpu never changes or deletes it."""
    if not container:
        return None
    try:
        inst = svc.runtime.instances.get(container)
    except RuntimeNotFound:
        return None
    owner = inst.label("owner")
    if owner != member:
        whose = f"marked as {owner}'s" if owner else "not marked as labgpu's (no user.labgpu.owner)"
        raise Conflict(
            f"the instance {container} is {whose}, not {member}'s: labgpu leaves it alone",
            hint="if it is the member's container, `labgpu reconcile` puts its owner key back",
        )
    return inst


def apply_spec(svc: Services, name: str) -> str:
    """Bring the member's existing container to the spec in the store, in ONE update request.

    Returns how it applied: APPLIED_LIVE (running), APPLIED_NEXT_START (stopped),
    APPLIED_WHEN_CREATED (no container yet), or "unchanged". Raises Conflict for an instance that
    is not the member's, BadInput when check_safe refuses the result, runtime errors when the
    daemon refuses the change (then nothing changed on the container). Waits for the update."""
    svc = member_services(svc, name)  # the daemon of the member's host
    with svc.session() as session:
        member = load_member(session, name)
        spec = container_spec(svc, member)
        roots = allowed_roots(svc, session)
    inst = owned_instance(svc, name, spec.name)
    if inst is None:
        return APPLIED_WHEN_CREATED
    config_patch, device_patch = desired_patch(spec.config(), spec.devices(), inst.config, inst.devices)
    if not config_patch and not device_patch:
        return "unchanged"
    check_safe(_merged(inst.config, config_patch), _merged(inst.devices, device_patch), allowed_roots=roots)
    svc.runtime.instances.update(spec.name, config=config_patch, devices=device_patch)
    return APPLIED_LIVE if inst.status == "Running" else APPLIED_NEXT_START


# Set ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One setting `member set` changed, and how it reached the container."""

    setting: str
    old: str
    new: str
    applied: str = ""
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class SetRequest:
    """A validated `member set`. A field named in ``given`` with the value None clears that limit."""

    given: frozenset[str] = frozenset()
    cpu: int | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    gpus: str | None = None
    add_shares: tuple[str, ...] = ()
    remove_shares: tuple[str, ...] = ()
    ports: Mapping[str, bool] = field(default_factory=dict)  # "rdp"/"vnc" -> wanted

    @property
    def empty(self) -> bool:
        return not (self.given or self.add_shares or self.remove_shares or self.ports)


def _clears(value: str | int | None) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("none", "default", "")


def parse_set_request(
    *,
    cpu: str | int | None = None,
    memory: str | None = None,
    disk: str | None = None,
    gpus: str | None = None,
    add_shares: Sequence[str] = (),
    remove_shares: Sequence[str] = (),
    rdp: bool | None = None,
    vnc: bool | None = None,
) -> SetRequest:
    """Check the options of `member set` (no store, no daemon). Raises BadInput.

    ``cpu``, ``memory`` and ``disk`` take ``none`` to go back to the profile's default."""
    given: set[str] = set()
    cpu_value = memory_value = disk_value = None
    if cpu is not None:
        given.add("cpu")
        if not _clears(cpu):
            text = str(cpu).strip()
            if not text.isdigit():
                raise BadInput(f"invalid CPU limit {cpu!r}: give a number of cores, or none")
            cpu_value = validate_cpu(int(text))
    if memory is not None:
        given.add("memory")
        memory_value = None if _clears(memory) else parse_size(memory, what="memory limit")
    if disk is not None:
        given.add("disk")
        disk_value = None if _clears(disk) else parse_size(disk, what="disk size")
    gpu_text = None
    if gpus is not None:
        given.add("gpus")
        gpu_text = str(parse_gpu_request(gpus))
    both = set(add_shares) & set(remove_shares)
    if both:
        raise BadInput(f"share(s) {', '.join(sorted(both))} given with both --share and --no-share")
    ports = {p: v for p, v in (("rdp", rdp), ("vnc", vnc)) if v is not None}
    return SetRequest(
        given=frozenset(given),
        cpu=cpu_value,
        memory_bytes=memory_value,
        disk_bytes=disk_value,
        gpus=gpu_text,
        add_shares=tuple(dict.fromkeys(add_shares)),
        remove_shares=tuple(dict.fromkeys(remove_shares)),
        ports=ports,
    )


@dataclass(frozen=True)
class _Before:
    """What `member set` changed in the row, to put it back when the daemon refuses."""

    cpu: int | None
    memory_bytes: int | None
    disk_bytes: int | None
    gpu_spec: str | None
    shares: frozenset[str]
    ports: dict[str, tuple[int, str, int]]  # purpose -> (host port, listen address, container port)
    spec_version: int


def _fmt_size(value: int | None) -> str:
    return format_size(value) if value else "default"


def set_member(svc: Services, name: str, request: SetRequest) -> list[Change]:
    """Change a member's limits, GPUs, shares and ports; apply them to the container.

    Writes the row (spec_version bumped, audit ``member.set``), then updates the container in ONE
    request: live when it runs (LXD and Incus apply limits, proxies and disks live), at its next
    start when stopped. When the daemon refuses, the row is put back and the error raised: nothing
    is left half-changed. Raises BadInput, NotFound, Conflict. Returns the changes (empty: nothing
    to do)."""
    if request.empty:
        raise BadInput(
            "nothing to change: give at least one of --cpu, --memory, --disk, --gpus, --share, "
            "--no-share, --rdp/--no-rdp, --vnc/--no-vnc"
        )
    svc = member_services(svc, name)  # the daemon of the member's host
    _check_set_against_world(svc, name, request)
    for attempt in range(_ALLOCATION_RETRIES):
        try:
            changes, before = _write_set(svc, name, request)
            break
        except IntegrityError as exc:
            if attempt + 1 == _ALLOCATION_RETRIES:
                constraint = violated_constraint(exc) or "a constraint"
                raise Conflict(f"could not change {name} ({constraint}); try again") from exc
    if not changes:
        return []
    try:
        applied = apply_spec(svc, name)
    except LabgpuError as exc:
        _revert_set(svc, name, before, reason=exc.message)
        raise type(exc)(
            f"{name}'s container refused the change, so nothing was changed: {exc.message}",
            hint=exc.hint,
        ) from exc
    if applied == "unchanged":  # e.g. --gpus on a host without GPUs: recorded, nothing to attach
        applied = "recorded"
    notes = _set_notes(svc, request, applied)
    return [replace(c, applied=applied, note=notes.get(c.setting, "")) for c in changes]


def _set_notes(svc: Services, request: SetRequest, applied: str) -> dict[str, str]:
    notes: dict[str, str] = {}
    if "disk" in request.given and request.disk_bytes is not None:
        pool = svc.runtime.storage_pools.find(svc.settings.storage_pool)
        if pool is not None and pool.driver == "dir":
            notes["disk"] = "the dir storage driver records the size but does not enforce it"
    if "cpu" in request.given and request.cpu is not None and applied == APPLIED_LIVE:
        # Both daemons pin CPUs in a background balancer (measured: usually at once, up to ~45 s).
        notes["cpu"] = "the daemon pins the CPUs in the background: at once or up to a minute later"
    if "gpus" in request.given and not host_gpus(svc.runtime):
        notes["gpus"] = "this host has no NVIDIA GPU: nothing attached now"
    return notes


def _check_set_against_world(svc: Services, name: str, request: SetRequest) -> None:
    with svc.session() as session:
        member = load_member(session, name)
        if member.state == MemberState.REMOVING:
            raise Conflict(f"member {name} is being removed; finish with `labgpu member rm {name}`")
        wanted = set(request.add_shares) | set(request.remove_shares)
        rows = {s.name: s for s in session.scalars(select(Share).where(Share.name.in_(wanted)))}
        unknown = sorted(wanted - set(rows))
        if unknown:
            raise BadInput(
                f"unknown share(s): {', '.join(unknown)}", hint="list them with `labgpu share list`"
            )
        for share_name in request.add_shares:
            if rows[share_name].all_members:
                raise BadInput(
                    f"share {share_name} is mounted for every member already (through the profile)"
                )
    if request.gpus is not None:
        missing = missing_gpus(parse_gpu_request(request.gpus), host_gpus(svc.runtime))
        if missing:
            raise BadInput(f"this host has no GPU {', '.join(map(str, missing))}")


def _write_set(svc: Services, name: str, request: SetRequest) -> tuple[list[Change], _Before]:
    settings = svc.settings
    changes: list[Change] = []
    with svc.session() as session:
        member = load_member(session, name)
        before = _Before(
            cpu=member.cpu_limit,
            memory_bytes=member.memory_limit_bytes,
            disk_bytes=member.disk_size_bytes,
            gpu_spec=member.gpu_spec,
            shares=frozenset(s.name for s in member.shares),
            ports={
                str(p.purpose): (p.host_port, p.listen_address, p.container_port) for p in member.port_maps
            },
            spec_version=member.spec_version,
        )
        if "cpu" in request.given and member.cpu_limit != request.cpu:
            changes.append(Change("cpu", str(member.cpu_limit or "default"), str(request.cpu or "default")))
            member.cpu_limit = request.cpu
        if "memory" in request.given and member.memory_limit_bytes != request.memory_bytes:
            changes.append(
                Change("memory", _fmt_size(member.memory_limit_bytes), _fmt_size(request.memory_bytes))
            )
            member.memory_limit_bytes = request.memory_bytes
        if "disk" in request.given and member.disk_size_bytes != request.disk_bytes:
            changes.append(Change("disk", _fmt_size(member.disk_size_bytes), _fmt_size(request.disk_bytes)))
            member.disk_size_bytes = request.disk_bytes
        current_gpus = member.gpu_spec or settings.default_gpus
        if request.gpus is not None and request.gpus != str(parse_gpu_request(current_gpus)):
            changes.append(Change("gpus", current_gpus, request.gpus))
            member.gpu_spec = request.gpus
        attached = {s.name: s for s in member.shares}
        for share in session.scalars(select(Share).where(Share.name.in_(request.add_shares))):
            if share.name not in attached:
                mode = "read-only" if share.readonly else "read-write"
                changes.append(Change(f"share {share.name}", "-", f"{share.path} ({mode})"))
                member.shares.append(share)
        for share_name in request.remove_shares:
            if share_name in attached:
                changes.append(Change(f"share {share_name}", attached[share_name].path, "-"))
                member.shares.remove(attached[share_name])
        have_ports = {str(p.purpose): p for p in member.port_maps}
        for purpose, wanted in request.ports.items():
            if wanted and purpose not in have_ports:
                port_map = _allocate_port(svc, session, member, purpose)
                member.port_maps.append(port_map)
                changes.append(Change(purpose, "-", f"port {port_map.host_port}"))
            elif not wanted and purpose in have_ports:
                changes.append(Change(purpose, f"port {have_ports[purpose].host_port}", "-"))
                member.port_maps.remove(have_ports[purpose])
        if changes:
            member.spec_version += 1
            session.flush()
            svc.audit(session, "member.set", name, changes=[c.as_dict() for c in changes])
    return changes, before


def _allocate_port(svc: Services, session: Session, member: Member, purpose: str) -> PortMap:
    """A new port map for ``purpose``: the lowest free port (the constraint catches a race)."""
    settings = svc.settings
    host_id = member.host_id if member.host_id is not None else local_host(session, svc.runtime).id
    used = session.scalars(
        select(PortMap.host_port).where(
            PortMap.host_id == host_id, PortMap.listen_address == settings.listen_address
        )
    )
    (port,) = allocate_ports(used, start=settings.port_range_start, end=settings.port_range_end, count=1)
    return PortMap(
        host_id=host_id,
        listen_address=settings.listen_address,
        host_port=port,
        container_port=CONTAINER_PORTS[purpose],
        purpose=PortPurpose(purpose),
    )


def _revert_set(svc: Services, name: str, before: _Before, *, reason: str) -> None:
    """Put the row back as it was before `member set` (the daemon refused the change)."""
    with svc.session() as session:
        member = load_member(session, name)
        member.cpu_limit = before.cpu
        member.memory_limit_bytes = before.memory_bytes
        member.disk_size_bytes = before.disk_bytes
        member.gpu_spec = before.gpu_spec
        for share in list(member.shares):
            if share.name not in before.shares:
                member.shares.remove(share)
        have = {s.name for s in member.shares}
        missing = before.shares - have
        if missing:
            member.shares.extend(session.scalars(select(Share).where(Share.name.in_(missing))))
        for pm in list(member.port_maps):
            if str(pm.purpose) not in before.ports:
                member.port_maps.remove(pm)
        session.flush()
        have_ports = {str(p.purpose) for p in member.port_maps}
        host_id = member.host_id if member.host_id is not None else local_host(session, svc.runtime).id
        for purpose, (port, listen, container_port) in before.ports.items():
            if purpose not in have_ports:
                member.port_maps.append(
                    PortMap(
                        host_id=host_id,
                        listen_address=listen,
                        host_port=port,
                        container_port=container_port,
                        purpose=PortPurpose(purpose),
                    )
                )
        member.spec_version = before.spec_version
        svc.audit(session, "member.set.reverted", name, reason=reason)


# Reset --------------------------------------------------------------------------------------------


def reset_member(
    svc: Services, name: str, *, template: str | None = None, wait_ssh: bool = True
) -> ConnectionSheet:
    """Rebuild a member's container from its template (or ``template``), keeping home, ports, keys.

    The old container (its root filesystem and its snapshots) is deleted; the home folder on the
    host is not touched. The member is marked ``provisioning`` (spec_version bumped, audit
    ``member.reset``) BEFORE the container is deleted, so a crash is finished by running the reset
    again, ``member add NAME`` or ``labgpu reconcile``. Waits for sshd. Returns the connection
    sheet with a new initial password. Raises NotFound, BadInput (unknown template), Conflict (an
    instance that is not the member's), ProvisionError."""
    svc = member_services(svc, name)  # the daemon of the member's host
    with svc.session() as session:
        member = load_member(session, name)
        if member.state == MemberState.REMOVING:
            raise Conflict(f"member {name} is being removed; finish with `labgpu member rm {name}`")
        if member.uid is None or member.container is None:
            raise Conflict(f"member {name} has no container to reset")
        container = member.container
        old_template = member.template or svc.settings.default_template
    new_template = template or old_template
    # Checked before anything is deleted: a container that cannot be made again is not thrown away.
    if svc.runtime.images.resolve_alias(new_template) is None:
        raise BadInput(
            f"unknown template {new_template!r}",
            hint="give one that exists with --template; list them with `labgpu template list` or `lxc image list`",
        )
    if svc.runtime.profiles.find(svc.settings.profile_name) is None:
        raise BadInput(f"the {svc.settings.profile_name} profile is missing", hint="run `labgpu host init`")
    inst = owned_instance(svc, name, container)
    with svc.session() as session:
        member = load_member(session, name)
        member.state = MemberState.PROVISIONING
        member.template = new_template
        member.spec_version += 1
        svc.audit(session, "member.reset", name, template=new_template, previous_template=old_template)
    checkpoint("reset-marked")
    if inst is not None:
        _delete_container(svc, container)
    checkpoint("reset-deleted")
    return provision(svc, name, wait_ssh=wait_ssh)


def _delete_container(svc: Services, container: str) -> None:
    runtime = svc.runtime
    try:
        if runtime.instances.state(container).status != "Stopped":
            runtime.instances.stop(container, force=True)
        runtime.instances.delete(container)
    except RuntimeNotFound:
        pass


# Remove -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    """What `member rm` did."""

    name: str
    container: str | None
    container_deleted: bool
    home: str
    archived_to: str | None = None
    purged: bool = False
    freed_ports: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


def archive_path(archive: Path, name: str, now: datetime) -> Path:
    """A new folder in ``archive`` for ``name``'s home: NAME-YYYYMMDDTHHMMSSZ (-2, -3... if taken)."""
    stem = f"{name}-{now.strftime('%Y%m%dT%H%M%SZ')}"
    path, n = archive / stem, 1
    while path.exists() or path.is_symlink() or path.with_name(path.name + ".partial").exists():
        n += 1
        path = archive / f"{stem}-{n}"
    return path


def remove_member(svc: Services, name: str, *, purge: bool = False) -> Removal:
    """Remove a member: delete their container, free their ports, archive (or purge) their home.

    The member is marked ``removing`` first (audit ``member.rm``); the container is deleted (only
    when it is marked as theirs); the home folder is MOVED to ``home_archive/NAME-<UTC time>``, or
    deleted with ``purge``; the row goes last, and with it the port maps and keys. Running it again
    after a crash finishes the job. Raises NotFound, Conflict (an instance of that name that is
    not the member's: nothing is changed). Waits for the deletion."""
    svc = member_services(svc, name)  # the daemon of the member's host
    with svc.session() as session:
        member = load_member(session, name)
        container = member.container
        ports = {str(p.purpose): p.host_port for p in member.port_maps}
    inst = owned_instance(svc, name, container)
    with svc.session() as session:
        member = load_member(session, name)
        member.state = MemberState.REMOVING
        svc.audit(session, "member.rm", name, purge=purge, container=container, ports=ports)
    checkpoint("rm-marked")
    return _finish(svc, name, container, inst is not None, ports, purge=purge)


def finish_removal(svc: Services, name: str) -> Removal:
    """Finish a `member rm` that stopped half-way (the member is ``removing``), as reconcile does.

    The home is archived, never purged: a purge needs the admin's explicit `member rm --purge`.
    Raises NotFound, Conflict (the member is not being removed, or the instance is not theirs)."""
    svc = member_services(svc, name)  # the daemon of the member's host
    with svc.session() as session:
        member = load_member(session, name)
        if member.state != MemberState.REMOVING:
            raise Conflict(f"member {name} is not being removed")
        container = member.container
        ports = {str(p.purpose): p.host_port for p in member.port_maps}
    inst = owned_instance(svc, name, container)
    return _finish(svc, name, container, inst is not None, ports, purge=False)


def _finish(
    svc: Services, name: str, container: str | None, exists: bool, ports: dict[str, int], *, purge: bool
) -> Removal:
    notes: list[str] = []
    if exists and container:
        _delete_container(svc, container)
    checkpoint("rm-container")
    home = home_dir(svc, name)
    archived: Path | None = None
    purged = False
    if home.is_symlink():
        # Never followed: only the link itself is moved or removed.
        notes.append(f"{home} was a symbolic link; only the link was {'removed' if purge else 'moved'}")
    if home.exists() or home.is_symlink():
        if purge:
            _purge(home)
            purged = True
        else:
            archived = _archive_home(svc, name, home)
    else:
        notes.append(f"no home folder at {home} (already archived or purged)")
    checkpoint("rm-home")
    with svc.session() as session:
        member = load_member(session, name)
        session.delete(member)
        svc.audit(
            session,
            "member.removed",
            name,
            archived_to=str(archived) if archived else None,
            purged=purged,
            freed_ports=ports,
        )
    notes += gateway_changed(svc, name)
    return Removal(
        name=name,
        container=container,
        container_deleted=exists,
        home=str(home),
        archived_to=str(archived) if archived else None,
        purged=purged,
        freed_ports=ports,
        notes=tuple(notes),
    )


def _purge(home: Path) -> None:
    if home.is_symlink():
        home.unlink()
    else:
        shutil.rmtree(home)


def _archive_home(svc: Services, name: str, home: Path) -> Path:
    archive = svc.settings.home_archive
    if not archive.exists():
        archive.mkdir(parents=True, mode=0o700)
    # A copy left by a move across filesystems that a crash interrupted.
    for partial in archive.glob(f"{name}-*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    target = archive_path(archive, name, utcnow())
    try:
        home.rename(target)  # the usual case: the same filesystem, instantaneous
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # another filesystem
            raise LabgpuError(f"could not archive {home} to {target}: {exc.strerror}") from exc
        _copy_then_remove(home, target)
    return target


def _copy_then_remove(home: Path, target: Path) -> None:
    # cp -a keeps owners, modes, times, links and sparse files (shutil does not keep owners).
    partial = target.with_name(target.name + ".partial")
    result = subprocess.run(
        ["cp", "-a", "--", str(home), str(partial)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise LabgpuError(f"could not copy {home} to {partial}: {result.stderr.strip()[:200]}")
    partial.rename(target)
    shutil.rmtree(home)


# For the CLI's confirmation prompts ---------------------------------------------------------------


def count_snapshots(svc: Services, name: str) -> int:
    """How many snapshots the member's container has (0 when it has no container)."""
    svc = member_services(svc, name)  # the daemon of the member's host
    with svc.session() as session:
        container = load_member(session, name).container
    if not container:
        return 0
    try:
        return len(svc.runtime.instances.snapshots(container))
    except NotFound:
        return 0
