"""A member's own templates: their container saved as an image, to reset to later.

Saving publishes a snapshot of the member's container (one they name, or one taken now) as a private image
on the container's host, reached by the alias ``member/OWNER/LABEL``. Lab templates are single names or
``NAME/VERSION`` (one slash, no slash in a version), so this alias cannot clash with one; the image carries
no ``labgpu.template`` property either, so it never shows in the lab's catalog. The store holds one
``member_templates`` row per saved template: that row, not the image, is what makes it the member's.

What is in the image: the root filesystem as the snapshot had it, nothing else. The home folder is a disk
device (a host folder mounted into the container), so it is in no snapshot and no image. Everything else
in the root filesystem is in it, SSH host keys, ``/etc/shadow`` and ``/root`` included: that is why a
member's template is used only for that member's own container (a reset, or `member add` of the owner),
never for another member's, admins included. Provisioning sets the login user's password and SSH keys
again as it does for any template; the SSH host keys stay the owner's, so a reset to the template keeps
the container's host identity. To hand an environment to the whole lab, an admin builds a lab template.

Quotas (``member_template_quota``, ``member_template_quota_gib``) are checked before publishing; the size
of the new image is known only after it, so a save that goes past the size quota deletes its image and is
refused. Removing a template deletes its image; containers made from it keep running (the daemon does not
need the image afterwards), and a member whose container was made from it is pointed back at the lab's
default template, so a later reset still works.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from labgpu.errors import N_, BadInput, Conflict, Exhausted, NotFound
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.hosts import services_for
from labgpu.services.members._records import load_member, member_services
from labgpu.services.members._snapshots import (
    SnapshotInfo,
    container_of,
    take_snapshot,
    validate_snapshot_name,
)
from labgpu.store.models import Member
from labgpu.store.models_my_templates import MemberTemplate

PREFIX = "member"
ALIAS_RE = re.compile(r"^member/([^/]+)/([^/]+)\Z")
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}\Z")
PROP_OWNER = "labgpu.owner"
PROP_MEMBER_TEMPLATE = "labgpu.member-template"
# Properties of the container's own image worth keeping: what it is, and which web apps it has (issue 16).
KEPT_PROPERTIES = ("os", "release", "variant", "architecture", "labgpu.apps")
GIB = 1024**3


def template_alias(owner: str, label: str) -> str:
    """The image alias of ``owner``'s template ``label``: ``member/OWNER/LABEL``."""
    return f"{PREFIX}/{owner}/{label}"


def is_member_template(ref: str | None) -> bool:
    """Whether ``ref`` names a member's own template (``member/OWNER/LABEL``), not a lab template."""
    return bool(ref) and ALIAS_RE.match(ref or "") is not None


def validate_label(label: str) -> str:
    """A template's label: 1-40 lower-case letters, digits, dots, hyphens, underscores. Raises BadInput."""
    if not LABEL_RE.match(label):
        raise BadInput(
            N_(
                "invalid template label %(label)s: use 1-40 lower-case letters, digits, dots, hyphens and "
                "underscores, starting with a letter or digit"
            ),
            values={"label": repr(label[:50])},
        )
    return label


@dataclass(frozen=True)
class MyTemplate:
    """A member's own template, as the store records it."""

    owner: str
    label: str
    alias: str
    host: str | None
    fingerprint: str
    size_bytes: int
    snapshot: str
    description: str
    created_at: datetime
    in_use: bool  # the owner's container is made from it (a reset without --template comes back to it)

    def as_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "label": self.label,
            "alias": self.alias,
            "host": self.host,
            "fingerprint": self.fingerprint,
            "size_bytes": self.size_bytes,
            "snapshot": self.snapshot,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "in_use": self.in_use,
        }


def _info(row: MemberTemplate) -> MyTemplate:
    return MyTemplate(
        owner=row.member.name,
        label=row.label,
        alias=row.alias,
        host=row.host.name if row.host else None,
        fingerprint=row.fingerprint,
        size_bytes=row.size_bytes,
        snapshot=row.snapshot,
        description=row.description or "",
        created_at=row.created_at,
        in_use=row.member.template == row.alias,
    )


def _rows(session: Session, owner: str | None) -> list[MemberTemplate]:
    query = (
        select(MemberTemplate)
        .join(Member)
        .options(selectinload(MemberTemplate.member), selectinload(MemberTemplate.host))
        .order_by(Member.name, MemberTemplate.created_at, MemberTemplate.id)
    )
    if owner is not None:
        query = query.where(Member.name == owner)
    return list(session.scalars(query))


def list_my_templates(svc: Services, owner: str | None = None) -> list[MyTemplate]:
    """``owner``'s own templates, oldest first; every member's with ``owner`` None (for admins). Reads the
    store only. Raises NotFound (no such member)."""
    with svc.session() as session:
        if owner is not None:
            load_member(session, owner)
        return [_info(row) for row in _rows(session, owner)]


def _load(session: Session, owner: str, label: str) -> MemberTemplate:
    validate_label(label)  # before the store sees it (PostgreSQL refuses a NUL with an error of its own)
    row = session.scalars(
        select(MemberTemplate)
        .join(Member)
        .where(Member.name == owner, MemberTemplate.label == label)
        .options(selectinload(MemberTemplate.member), selectinload(MemberTemplate.host))
    ).first()
    if row is None:
        raise NotFound(
            N_("%(owner)s has no template named %(label)s"), values={"owner": owner, "label": label[:50]}
        )
    return row


def get_my_template(svc: Services, owner: str, label: str) -> MyTemplate:
    """One of ``owner``'s templates. Raises NotFound."""
    with svc.session() as session:
        return _info(_load(session, owner, label))


def check_template_use(svc: Services, name: str, template: str) -> None:
    """Refuse to make ``name``'s container from ``template`` when it is a member's own template that is not
    ``name``'s, or not on the host of ``name``'s container. Lab templates pass (their existence is checked
    by the caller). Raises BadInput."""
    match = ALIAS_RE.match(template)
    if match is None:
        return
    owner, label = match.group(1), match.group(2)
    if not LABEL_RE.match(label):
        raise BadInput(N_("unknown template %(template)s"), values={"template": repr(template[:120])})
    if owner != name:
        raise BadInput(
            N_(
                "template %(template)s is another member's own template: only its owner's container is made from it"
            ),
            values={"template": template[:120]},
        )
    with svc.session() as session:
        member = load_member(session, name)
        row = session.scalars(
            select(MemberTemplate).where(MemberTemplate.member_id == member.id, MemberTemplate.label == label)
        ).first()
        if row is None:
            raise BadInput(N_("unknown template %(template)s"), values={"template": template[:120]})
        if row.host_id != member.host_id:
            raise BadInput(
                N_(
                    "template %(template)s is on another host than %(name)s's container (it was saved before "
                    "the container moved): save it again from the container"
                ),
                values={"template": template, "name": name},
            )


# Saving -------------------------------------------------------------------------------------------


def _quota_check(svc: Services, owner: str, label: str) -> int:
    """Refuse a save that the quotas or the label forbid; returns the bytes the owner's templates take."""
    quota = svc.settings.member_template_quota
    with svc.session() as session:
        rows = _rows(session, owner)
    if any(r.label == label for r in rows):
        raise Conflict(
            N_("%(owner)s already has a template named %(label)s: delete it first or choose another label"),
            values={"owner": owner, "label": label},
        )
    if len(rows) >= quota:
        raise Exhausted(
            N_(
                "template quota reached: %(count)s of %(quota)s templates saved; delete one first "
                "(the lab's limit is member_template_quota)"
            ),
            values={"count": len(rows), "quota": quota},
        )
    used = sum(r.size_bytes for r in rows)
    limit = svc.settings.member_template_quota_gib
    if limit and used >= limit * GIB:
        raise Exhausted(
            N_("template quota reached: your templates take %(used)s GiB of %(limit)s GiB; delete one first"),
            values={"used": f"{used / GIB:.1f}", "limit": f"{limit:g}"},
        )
    return used


def _properties(svc: Services, container: str, owner: str, alias: str, snapshot: str) -> dict[str, str]:
    config = svc.runtime.instances.get(container).config
    props = {k: config[f"image.{k}"] for k in KEPT_PROPERTIES if config.get(f"image.{k}")}
    base = config.get("image.description") or config.get("user.labgpu.template") or ""
    props.update(
        {
            "description": f"{owner}'s own template, from snapshot {snapshot} of {container}"
            + (f" (made from {base})" if base else ""),
            PROP_OWNER: owner,
            PROP_MEMBER_TEMPLATE: alias,
        }
    )
    return props


def save_my_template(
    svc: Services, owner: str, label: str, *, snapshot: str | None = None, description: str = ""
) -> MyTemplate:
    """Publish a snapshot of ``owner``'s container as their own template ``member/OWNER/LABEL`` on the
    container's host. ``snapshot`` None: a snapshot is taken now (an automatic one) and published. Checks
    the quotas first; an image that goes past the size quota is deleted again. Waits for the publish
    (minutes for a large root filesystem). Audit ``member.template.save``. Raises BadInput (label,
    description, snapshot name), NotFound (member, container, snapshot), Conflict (label taken),
    Exhausted (quota)."""
    validate_label(label)
    description = description.strip()
    if len(description) > 255 or not description.isprintable():
        raise BadInput(N_("a template's description is one line of at most 255 characters"))
    if snapshot is not None:
        validate_snapshot_name(snapshot)
    used = _quota_check(svc, owner, label)
    msvc = member_services(svc, owner)
    runtime = msvc.runtime
    container = container_of(msvc, owner, changing=True)
    if snapshot is None:
        snapshot = take_snapshot(svc, owner).snapshot.name
    names = [SnapshotInfo.from_api(d).name for d in runtime.instances.snapshots(container)]
    if snapshot not in names:
        raise NotFound(
            N_("%(name)s has no snapshot %(snapshot)s"), values={"name": owner, "snapshot": snapshot}
        )
    alias = template_alias(owner, label)
    _drop_leftover(msvc, alias)
    fingerprint = runtime.images.publish_snapshot(
        container,
        snapshot,
        properties=_properties(msvc, container, owner, alias, snapshot),
        timeout=svc.settings.operation_timeout * 6,  # a large root filesystem takes minutes to compress
    )
    size = runtime.images.get(fingerprint).size
    limit = svc.settings.member_template_quota_gib
    if limit and used + size > limit * GIB:
        _delete_image(msvc, fingerprint, alias)
        raise Exhausted(
            N_(
                "template quota reached: this template is %(size)s GiB and your templates already take "
                "%(used)s GiB of %(limit)s GiB; it was not kept"
            ),
            values={"size": f"{size / GIB:.1f}", "used": f"{used / GIB:.1f}", "limit": f"{limit:g}"},
        )
    runtime.images.set_alias(alias, fingerprint, description=f"{owner}'s template {label}")
    try:
        _record(svc, owner, label, alias, fingerprint, size, snapshot, description)
    except IntegrityError:  # the same label saved at the same moment by another request: it won
        raise Conflict(
            N_("%(owner)s already has a template named %(label)s: delete it first or choose another label"),
            values={"owner": owner, "label": label},
        ) from None
    return get_my_template(svc, owner, label)


def _record(
    svc: Services,
    owner: str,
    label: str,
    alias: str,
    fingerprint: str,
    size: int,
    snapshot: str,
    description: str,
) -> None:
    with svc.session() as session:
        member = load_member(session, owner)
        row = MemberTemplate(
            member_id=member.id,
            label=label,
            alias=alias,
            host_id=member.host_id,
            fingerprint=fingerprint,
            size_bytes=size,
            snapshot=snapshot,
            description=description or None,
        )
        session.add(row)
        svc.audit(
            session,
            "member.template.save",
            owner,
            template=alias,
            snapshot=snapshot,
            fingerprint=fingerprint,
            size_bytes=size,
        )


def _drop_leftover(svc: Services, alias: str) -> None:
    """An alias with no row is what a save interrupted between the publish and the store left: its image
    is the same member's, so it is deleted before publishing again. Anything else of that name (not made
    by labgpu for that member) is refused."""
    image = svc.runtime.images.get_by_alias(alias)
    if image is None:
        return
    if image.properties.get(PROP_MEMBER_TEMPLATE) != alias:
        raise Conflict(
            N_("an image alias %(alias)s exists and was not made by labgpu for this member"),
            values={"alias": alias},
        )
    _delete_image(svc, image.fingerprint, alias)


def _delete_image(svc: Services, fingerprint: str, alias: str) -> None:
    with contextlib.suppress(RuntimeNotFound):
        svc.runtime.images.delete_alias(alias)
    with contextlib.suppress(RuntimeNotFound):
        svc.runtime.images.delete(fingerprint)


# Removing -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MyTemplateRemoval:
    alias: str
    image_deleted: bool
    template_now: str | None  # what the owner's reset uses now, when it was this template

    def as_dict(self) -> dict[str, Any]:
        return {"alias": self.alias, "image_deleted": self.image_deleted, "template_now": self.template_now}


def remove_my_template(svc: Services, owner: str, label: str) -> MyTemplateRemoval:
    """Delete ``owner``'s template ``label``: its image on its host, then its row. A container made from
    it keeps running; when it is the owner's container's template, the owner is pointed back at the lab's
    default template (so `member reset` still has one). Waits. Audit ``member.template.rm``. Raises
    NotFound."""
    with svc.session() as session:
        row = _load(session, owner, label)
        host, alias, fingerprint = row.host, row.alias, row.fingerprint
    hsvc = services_for(svc, host)
    deleted = True
    try:
        hsvc.runtime.images.delete(fingerprint)
    except RuntimeNotFound:
        deleted = False
    with contextlib.suppress(RuntimeNotFound):
        hsvc.runtime.images.delete_alias(alias)  # gone with the image; a leftover alias would block a save
    template_now = None
    with svc.session() as session:
        row = _load(session, owner, label)
        if row.member.template == alias:
            row.member.template = None
            template_now = svc.settings.default_template
        session.delete(row)
        svc.audit(
            session,
            "member.template.rm",
            owner,
            template=alias,
            fingerprint=fingerprint,
            image_deleted=deleted,
            template_now=template_now,
        )
    return MyTemplateRemoval(alias=alias, image_deleted=deleted, template_now=template_now)
