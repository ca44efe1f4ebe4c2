"""JSON API schemas (requests and answers). Kept apart from ORM rows and service dataclasses: routes
convert at the edge with ``Model.model_validate(obj.as_dict())`` or keyword arguments."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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
    name: str
    email: str | None
    role: str
    has_password: bool
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None
    password_changed_at: datetime | None


class MeOut(AccountOut):
    auth: Literal["session", "token"] = Field(description="How this request was authenticated.")


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class MessageOut(BaseModel):
    message: str


class CountOut(BaseModel):
    count: int


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64, description="What the token is for, e.g. laptop.")
    expires_days: int | None = Field(
        90, ge=1, le=3650, description="Lifetime in days; null for a token that does not expire."
    )


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to tell tokens apart.")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    expired: bool


class NewTokenOut(TokenOut):
    token: str = Field(description="The token itself: shown this once, never again.")


class MemberOut(BaseModel):
    name: str
    email: str | None
    role: str
    state: str = Field(
        description="The desired state in the store: provisioning, running, stopped, removing."
    )
    status: str = Field(description="The daemon's view: Running, Stopped, missing, unreachable, unknown.")
    host: str | None
    container: str | None
    template: str | None
    uid: int | None
    cpu: int | None
    memory_bytes: int | None
    disk_bytes: int | None
    gpus: str
    ports: dict[str, int]
    address: str | None
    ipv4: list[str]
    shares: list[str]
    keys: list[str]
    home: str
    memory_usage: int
    processes: int


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
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, object] | None
    source_address: str | None
