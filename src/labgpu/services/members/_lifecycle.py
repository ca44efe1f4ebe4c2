"""A member's container after it exists: rebuild it (reset), remove it (rm).

Every change follows the design's rule: write the desired state in the store first (one
transaction, with an audit event), then bring the container to it. Steps that destroy something
(deleting a container) happen only after the store says what should come next, so a crash at any
point is finished by running the same command again (or ``labgpu reconcile``):

- ``reset`` marks the member ``provisioning`` before it deletes the container; provisioning again
  recreates it from the store (home, ports and keys kept).
- ``rm`` marks the member ``removing`` before it deletes anything; the row, and with it the ports,
  goes last.

Changing a container (``set``) is :mod:`labgpu.services.members._set`'s; the patch it and snapshots apply is
:mod:`labgpu.services.members._apply`'s.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from labgpu.errors import BadInput, Conflict, LabgpuError, NotFound
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.members._apply import owned_instance
from labgpu.services.members._keys import gateway_changed
from labgpu.services.members._my_templates import check_template_use
from labgpu.services.members._provision import checkpoint, provision
from labgpu.services.members._records import ConnectionSheet, home_dir, load_member, member_services
from labgpu.services.members._steps import StepReporter, silent
from labgpu.store.models import MemberState, utcnow

# Reset --------------------------------------------------------------------------------------------


def reset_member(
    svc: Services,
    name: str,
    *,
    template: str | None = None,
    wait_ssh: bool = True,
    report: StepReporter = silent,
) -> ConnectionSheet:
    """Rebuild a member's container from its template (or ``template``), keeping home, ports, keys.

    The old container (its root filesystem and its snapshots) is deleted; the home folder on the
    host is not touched. The member is marked ``provisioning`` (spec_version bumped, audit
    ``member.reset``) BEFORE the container is deleted, so a crash is finished by running the reset
    again, ``member add NAME`` or ``labgpu reconcile``. Waits for sshd. Returns the connection
    sheet with a new initial password. Raises NotFound, BadInput (unknown template), Conflict (an
    instance that is not the member's), ProvisionError. ``report`` is told each step as it begins."""
    report("checking the template")
    svc = member_services(svc, name)  # the daemon of the member's host
    if template is not None:
        check_template_use(svc, name, template)  # a bad choice is told first, whatever the container's state
    with svc.session() as session:
        member = load_member(session, name)
        if member.state == MemberState.REMOVING:
            raise Conflict(f"member {name} is being removed; finish with `labgpu member rm {name}`")
        if member.uid is None or member.container is None:
            raise Conflict(f"member {name} has no container to reset")
        container = member.container
        old_template = member.template or svc.settings.default_template
    new_template = template or old_template
    check_template_use(svc, name, new_template)
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
        report("deleting the old container")
        _delete_container(svc, container)
    checkpoint("reset-deleted")
    return provision(svc, name, wait_ssh=wait_ssh, report=report)


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
