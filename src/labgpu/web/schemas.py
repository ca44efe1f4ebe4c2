"""JSON API schemas (requests and answers).

An answer that is a service's entity is derived from its dataclass (:func:`fields_of`): one definition of
the entity, field for field, with what the API adds (descriptions, narrower types); a field added to the
dataclass is in the API at once, and one removed cannot linger in the schema. Routes convert at the edge
with ``Model.model_validate(obj.as_dict())``. Requests, and answers that are not one entity (a message, a
count, a connection sheet with its rendered files), are written out here.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from labgpu.services import members, portal


def fields_of(
    source: type,
    descriptions: Mapping[str, str] | None = None,
    types: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The annotations of a schema with the fields of the dataclass ``source`` (its types, unless ``types``
    narrows one; ``descriptions`` for the API docs). Used as a model's ``__annotations__``."""
    hints = typing.get_type_hints(source)
    out: dict[str, Any] = {}
    for field in dataclasses.fields(source):
        kind = (types or {}).get(field.name, hints[field.name])
        description = (descriptions or {}).get(field.name)
        out[field.name] = Annotated[kind, Field(description=description)] if description else kind
    unknown = {*(descriptions or {}), *(types or {})} - set(out)
    if unknown:
        raise TypeError(f"{source.__name__} has no field {sorted(unknown)}")
    return out


class ErrorDetail(BaseModel):
    reason: str = Field(description="Short machine-readable label, e.g. not-found, csrf, throttled.")
    message: str = Field(description="One line for a person.")


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Bad input"),
        (401, "No valid login session or API token"),
        (403, "Not allowed (or a missing CSRF token)"),
        (404, "No such object, or not yours"),
        (409, "Conflicts with the current state"),
        (422, "The request does not match the schema"),
        (429, "Too many attempts"),
        (503, "A dependency (the LXD/Incus daemon, the database) is unavailable"),
    )
}


class AccountOut(BaseModel):
    """A portal account: ``portal.AccountInfo``."""

    __annotations__ = fields_of(portal.AccountInfo)


class MeOut(AccountOut):
    auth: Literal["session", "token"] = Field(description="How this request was authenticated.")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class MessageOut(BaseModel):
    message: str


class CountOut(BaseModel):
    count: int


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=64, description="What the token is for, e.g. laptop.")
    expires_days: int | None = Field(
        90, ge=1, le=3650, description="Lifetime in days; null for a token that does not expire."
    )


class TokenOut(BaseModel):
    """A personal API token, never the token itself: ``portal.TokenInfo`` and whether it has expired."""

    __annotations__ = {
        **fields_of(
            portal.TokenInfo, descriptions={"prefix": "The token's first characters, to tell tokens apart."}
        ),
        "expired": bool,
    }


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself: shown this once, never again.")


class MemberOut(BaseModel):
    """A member and their container: ``members.MemberInfo``."""

    __annotations__ = fields_of(
        members.MemberInfo,
        descriptions={
            "state": "The desired state in the store: provisioning, running, stopped, removing.",
            "status": "The daemon's view: Running, Stopped, missing, unreachable, unknown.",
        },
    )


class SshOut(BaseModel):
    host: str
    port: int
    user: str
    command: str


class ConnectionOut(BaseModel):
    name: str
    container: str
    host: str
    state: str
    ssh: SshOut
    ports: dict[str, int]
    home: str
    container_home: str
    ssh_config: str
    rdp_file: str | None = None


class PowerOut(BaseModel):
    name: str
    status: str


class AuditOut(BaseModel):
    """An entry of the audit log: ``portal.AuditEntry``."""

    __annotations__ = fields_of(portal.AuditEntry)


# Applications ---------------------------------------------------------------------------------------


class ApplicationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=64, description="The member name asked for (a Linux user name).")
    email: str = Field(max_length=254, description="Where the decision is sent.")
    password: str = Field(max_length=1024, description="The portal password (kept only as a hash).")
    supervisor: str | None = Field(None, max_length=128)
    group_name: str | None = Field(None, max_length=128)
    reason: str | None = Field(None, max_length=2000)


class ApplicationReceived(BaseModel):
    id: int
    name: str
    status: str
    message: str


class ApplicationOut(BaseModel):
    """An application: ``portal.ApplicationInfo``."""

    __annotations__ = fields_of(
        portal.ApplicationInfo,
        descriptions={"progress": "Provisioning progress, or the error of a failed one."},
        types={"status": Literal["pending", "approved", "done", "failed", "rejected"]},
    )


class ApplicationApprove(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    template: str | None = Field(None, max_length=255, description="Template; empty: the default.")
    cpu: int | None = Field(None, ge=1, le=4096, description="CPU limit in cores; empty: no limit.")
    memory: str | None = Field(None, max_length=32, description="Memory limit, e.g. 32GiB; empty: none.")
    gpus: str | None = Field(None, max_length=255, description="all, none, or indexes such as 0,1.")


class ApplicationReject(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str = Field(min_length=1, max_length=2000, description="Sent to the applicant.")


# The lab: containers, hosts, templates, shares -----------------------------------------------------


class ContainerOut(BaseModel):
    """An instance on a host, labgpu's or not: ``members.ContainerRow``."""

    __annotations__ = fields_of(
        members.ContainerRow,
        descriptions={
            "status": "The daemon's status, or missing / unreachable.",
            "kind": "labgpu: a member's; foreign: not labgpu's (never touched); orphan: marked as labgpu's "
            "but no member explains it.",
        },
        types={"kind": Literal["labgpu", "foreign", "orphan"]},
    )


class HostOut(BaseModel):
    """A host in the store: ``members.HostRow``."""

    __annotations__ = fields_of(members.HostRow)


class TemplateVersionOut(BaseModel):
    name: str
    version: str | None
    ref: str
    fingerprint: str
    aliases: list[str]
    size: int
    created_at: str
    built_at: str
    spec_hash: str
    description: str
    latest: bool
    containers: list[str]


class TemplateOut(BaseModel):
    name: str
    latest: str | None
    containers: list[str]
    versions: list[TemplateVersionOut]


class ShareOut(BaseModel):
    name: str
    source: str
    path: str
    readonly: bool
    all_members: bool
    members: list[str]
    device: str


class ShareCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=63)
    source: str = Field(max_length=4096, description="Folder on the host.")
    path: str = Field(max_length=4096, description="Mount point inside the containers.")
    readonly: bool = True
    all_members: bool = False


# A member's container: limits, removal, reset, snapshots, keys --------------------------------------


class MemberChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    cpu: str | None = Field(None, max_length=8, description="Cores, or none for no limit.")
    memory: str | None = Field(None, max_length=32, description="e.g. 32GiB, or none.")
    disk: str | None = Field(None, max_length=32, description="e.g. 100GiB, or none.")
    gpus: str | None = Field(None, max_length=255, description="all, none, or indexes such as 0,1.")


class ChangeOut(BaseModel):
    """One changed setting of a member: ``members.Change``."""

    __annotations__ = fields_of(members.Change)


class RemovalOut(BaseModel):
    """What removing a member did: ``members.Removal``."""

    __annotations__ = fields_of(members.Removal)


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    confirm: str = Field(max_length=64, description="The member's name, typed again.")
    template: str | None = Field(
        None,
        max_length=255,
        description="Another template: any for admins; for the member, one of their own (member/NAME/LABEL).",
    )


class InitialPasswordOut(BaseModel):
    name: str
    user: str
    password: str = Field(description="Shown once; must be changed at the first SSH login.")


class ResetOut(ConnectionOut):
    initial_password: str | None = Field(None, description="Shown once; changed at the first login.")


class SnapshotOut(BaseModel):
    """A snapshot of a member's container: ``members.SnapshotInfo``."""

    __annotations__ = fields_of(members.SnapshotInfo)


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str | None = Field(None, max_length=63, description="Empty: an automatic name (rotated).")


class SnapshotTaken(SnapshotOut):
    pruned: list[str]
    note: str


class KeyOut(BaseModel):
    fingerprint: str
    comment: str
    key: str


class KeyAdd(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    key: str = Field(max_length=16384, description="One or more public keys, one per line.")


class MyTemplateOut(BaseModel):
    """A member's own template (an image saved from a snapshot of their container): ``members.MyTemplate``."""

    __annotations__ = fields_of(
        members.MyTemplate,
        {
            "alias": "The image alias, member/OWNER/LABEL: give it to a reset as its template.",
            "size_bytes": "The image's size (compressed), what the quota counts.",
            "in_use": "The owner's container is made from it: a reset without a template comes back to it.",
        },
    )


class MyTemplateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    label: str = Field(
        max_length=40, description="1-40 lower-case letters, digits, dots, hyphens, underscores."
    )
    snapshot: str | None = Field(
        None, max_length=63, description="The snapshot to publish; empty: one taken now."
    )
    description: str = Field("", max_length=255, description="One line saying what is in it.")


class MyTemplateRemovalOut(BaseModel):
    alias: str
    image_deleted: bool
    template_now: str | None = Field(
        description="What a reset of the owner's container uses now, when it was this."
    )
