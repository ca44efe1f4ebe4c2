"""Shares: host folders (datasets, toolkits, licensed software) mounted into members' containers.

A share is the disk device ``share-NAME`` (read-only unless made ``--rw``). It reaches a container
in one of two ways:

- attached to chosen members (``member add --share``, ``member set --share``): the device is on
  their containers, and the store's member_shares rows say so;
- attached to every member (``share add --all``): the device is on labgpu's profile, so every
  container using the profile gets it, now and later.

labgpu never writes to, moves or deletes a share's host folder: ``share rm`` only detaches it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from labgpu.domain.container import ShareSpec, check_safe
from labgpu.domain.shares import check_share_path, check_share_source, validate_share_name
from labgpu.errors import BadInput, Conflict, NotFound
from labgpu.services.context import Services
from labgpu.services.members._apply import apply_spec
from labgpu.store.models import Member, Share


@dataclass
class ShareInfo:
    name: str
    source: str
    path: str
    readonly: bool
    all_members: bool
    members: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def device_name(self) -> str:
        return ShareSpec(self.name, self.source, self.path, self.readonly).device_name

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["device"] = self.device_name
        return out


def _info(share: Share) -> ShareInfo:
    return ShareInfo(
        name=share.name,
        source=share.source,
        path=share.path,
        readonly=share.readonly,
        all_members=share.all_members,
        members=sorted(m.name for m in share.members),
    )


def _device(share: Share | ShareInfo) -> tuple[str, dict[str, str]]:
    spec = ShareSpec(share.name, share.source, share.path, share.readonly)
    return spec.device_name, spec.device()


def validate_share(svc: Services, *, name: str, source: str, path: str) -> tuple[str, str, str]:
    """Check a new share's name, host folder and mount path; return them normalised. Raises BadInput."""
    validate_share_name(name)
    settings = svc.settings
    private = [str(settings.state_dir), str(settings.home_base), str(settings.home_archive)]
    source = check_share_source(source, real_path=os.path.realpath(source), private=private)
    if not Path(source).is_dir():
        raise BadInput(f"the share source {source} does not exist or is not a folder on this host")
    path = check_share_path(path, container_user=settings.container_user)
    return name, source, path


def add_share(
    svc: Services,
    *,
    name: str,
    source: str,
    path: str,
    readonly: bool = True,
    all_members: bool = False,
) -> ShareInfo:
    """Record a share; with ``all_members``, also add its device to labgpu's profile (every
    container gets it live). Audit ``share.add``. Running it again with the same arguments after a
    crash finishes the job. Raises BadInput, Conflict (name or mount path taken)."""
    name, source, path = validate_share(svc, name=name, source=source, path=path)
    profile = svc.settings.profile_name
    if all_members and svc.runtime.profiles.find(profile) is None:
        raise BadInput(f"the {profile} profile is missing", hint="run `labgpu host init` first")
    with svc.session() as session:
        existing = session.scalars(select(Share).where(Share.name == name)).first()
        if existing is not None:
            same = (existing.source, existing.path, existing.readonly, existing.all_members) == (
                source,
                path,
                readonly,
                all_members,
            )
            if not same or not all_members:
                raise Conflict(f"a share named {name} exists already", hint="see `labgpu share list`")
        else:
            clash = session.scalars(select(Share.name).where(Share.path == path)).first()
            if clash is not None:
                raise Conflict(f"share {clash} is mounted at {path} already; choose another path")
    if existing is None:
        try:
            with svc.session() as session:
                session.add(
                    Share(name=name, source=source, path=path, readonly=readonly, all_members=all_members)
                )
                svc.audit(
                    session,
                    "share.add",
                    name,
                    source=source,
                    path=path,
                    readonly=readonly,
                    all_members=all_members,
                )
        except IntegrityError:
            raise Conflict(f"a share named {name} exists already") from None
    info = ShareInfo(name, source, path, readonly, all_members)
    if all_members:
        try:
            _add_to_profile(svc, info)
        except Exception:
            if existing is None:
                _forget(svc, name, reason="the profile refused the device")
            raise
    return info


def _add_to_profile(svc: Services, share: ShareInfo) -> None:
    profiles = svc.runtime.profiles
    current = profiles.get(svc.settings.profile_name)
    dev_name, device = _device(share)
    if current.devices.get(dev_name) == device:
        return
    check_safe({}, {dev_name: device}, allowed_roots=[share.source])
    profiles.replace(
        current.name,
        config=current.config,
        devices={**current.devices, dev_name: device},
        description=current.description,
    )


def _forget(svc: Services, name: str, *, reason: str) -> None:
    with svc.session() as session:
        share = session.scalars(select(Share).where(Share.name == name)).first()
        if share is not None:
            session.delete(share)
            svc.audit(session, "share.add.undone", name, reason=reason)


def list_shares(svc: Services) -> list[ShareInfo]:
    """Every share with the members it is attached to (all members: ``all_members``)."""
    with svc.session() as session:
        rows = session.scalars(select(Share).order_by(Share.name).options(selectinload(Share.members))).all()
        return [_info(s) for s in rows]


def get_share(svc: Services, name: str) -> ShareInfo:
    with svc.session() as session:
        share = session.scalars(
            select(Share).where(Share.name == name).options(selectinload(Share.members))
        ).first()
        if share is None:
            raise NotFound(f"no share named {name}", hint="list them with `labgpu share list`")
        return _info(share)


def remove_share(svc: Services, name: str) -> ShareInfo:
    """Detach a share from every container and forget it; the host folder is never touched.

    First the store (members detached, spec_version bumped, audit ``share.rm``), then each
    container that still has the device (found on the daemon, so a re-run after a crash finds
    them too), then the profile, then the share's row. Waits. Raises NotFound, Conflict (a
    container that is not its member's), runtime errors (re-run to finish)."""
    with svc.session() as session:
        share = session.scalars(
            select(Share).where(Share.name == name).options(selectinload(Share.members))
        ).first()
        if share is None:
            raise NotFound(f"no share named {name}", hint="list them with `labgpu share list`")
        info = _info(share)
        for member in list(share.members):
            member.spec_version += 1
        share.members.clear()
        svc.audit(session, "share.rm", name, source=info.source, members=info.members)
    dev_name, _ = _device(info)
    with svc.session() as session:
        containers = {
            m.name: m.container
            for m in session.scalars(select(Member).order_by(Member.name))
            if m.container is not None
        }
    instances = {i.name: i for i in svc.runtime.instances.all(with_state=False)}
    for member_name, container in containers.items():
        inst = instances.get(container)
        has_device = inst is not None and dev_name in inst.devices
        if member_name not in info.members and not has_device:
            continue
        try:
            apply_spec(svc, member_name)
        except Conflict:
            info.notes.append(f"{container} is not marked as {member_name}'s: left alone")
    profile = svc.runtime.profiles.find(svc.settings.profile_name)
    if profile is not None and dev_name in profile.devices:
        devices = {k: v for k, v in profile.devices.items() if k != dev_name}
        svc.runtime.profiles.replace(
            profile.name, config=profile.config, devices=devices, description=profile.description
        )
    _forget_row(svc, name)
    return info


def _forget_row(svc: Services, name: str) -> None:
    with svc.session() as session:
        share = session.scalars(select(Share).where(Share.name == name)).first()
        if share is not None:
            session.delete(share)


def members_with(svc: Services, name: str) -> list[str]:
    """The members a share is attached to (for confirmation prompts)."""
    return get_share(svc, name).members
