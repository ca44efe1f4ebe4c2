"""JSON API: a member's container, self-service: reset, first-login password, snapshots, SSH keys.

Admins may act on anyone; a member only on themself (anyone else is answered 404)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from labgpu.errors import N_, BadInput
from labgpu.services import members
from labgpu.services.portal import Forbidden
from labgpu.web.deps import CurrentMember, ServicesDep, VisibleMember
from labgpu.web.schemas import (
    ERROR_RESPONSES,
    InitialPasswordOut,
    KeyAdd,
    KeyOut,
    ResetOut,
    ResetRequest,
    SnapshotCreate,
    SnapshotOut,
    SnapshotTaken,
)

router = APIRouter(prefix="/api/v1", tags=["container"], responses=ERROR_RESPONSES)
NO_CONTENT: dict[int | str, dict[str, Any]] = {204: {"description": "Done"}}


@router.post("/members/{name}/reset", response_model=ResetOut)
def reset(name: VisibleMember, body: ResetRequest, identity: CurrentMember, svc: ServicesDep) -> ResetOut:
    """Rebuild the container from its template, keeping the home folder, ports and keys (everything else
    in it is lost). Waits until sshd answers. The answer holds a new first-login password, shown once."""
    if body.confirm != name:
        raise BadInput(N_("type the member's name to confirm the reset"))
    if body.template and not identity.is_admin:
        raise Forbidden("only an admin may choose another template")
    sheet = members.reset_member(svc, name, template=body.template or None)
    return ResetOut.model_validate(sheet.as_dict(with_password=True))


@router.post("/members/{name}/initial-password", response_model=InitialPasswordOut)
def initial_password(name: VisibleMember, svc: ServicesDep) -> InitialPasswordOut:
    """Set a new random password for the container's login user, expired: it must be changed at the first
    SSH login. The answer is the only place it is shown. The container must be running."""
    password = members.reset_password(svc, name)
    return InitialPasswordOut(name=name, user=svc.settings.container_user, password=password)


@router.get("/members/{name}/snapshots", response_model=list[SnapshotOut])
def list_snapshots(name: VisibleMember, svc: ServicesDep) -> list[SnapshotOut]:
    """The container's snapshots, oldest first (the home folder is never in them)."""
    return [SnapshotOut.model_validate(s.as_dict()) for s in members.list_snapshots(svc, name)]


@router.post("/members/{name}/snapshots", response_model=SnapshotTaken, status_code=201)
def take_snapshot(name: VisibleMember, body: SnapshotCreate, svc: ServicesDep) -> SnapshotTaken:
    """Snapshot the container; automatic snapshots beyond snapshots_keep are deleted, oldest first."""
    taken = members.take_snapshot(svc, name, body.name or None)
    return SnapshotTaken.model_validate(taken.as_dict())


@router.post("/members/{name}/snapshots/{snapshot}/restore", response_model=SnapshotOut)
def restore_snapshot(name: VisibleMember, snapshot: str, svc: ServicesDep) -> SnapshotOut:
    """Roll the container's root filesystem back to the snapshot (the home folder is not touched)."""
    found = next((s for s in members.list_snapshots(svc, name) if s.name == snapshot), None)
    members.restore_snapshot(svc, name, snapshot)
    assert found is not None  # restore_snapshot raised NotFound otherwise
    return SnapshotOut.model_validate(found.as_dict())


@router.delete("/members/{name}/snapshots/{snapshot}", status_code=204, responses=NO_CONTENT)
def delete_snapshot(name: VisibleMember, snapshot: str, svc: ServicesDep) -> Response:
    """Delete one snapshot."""
    members.delete_snapshot(svc, name, snapshot)
    return Response(status_code=204)


@router.get("/members/{name}/keys", response_model=list[KeyOut])
def list_keys(name: VisibleMember, svc: ServicesDep) -> list[KeyOut]:
    """The SSH public keys installed in the container."""
    return [KeyOut.model_validate(k) for k in members.list_keys(svc, name)]


@router.post("/members/{name}/keys", response_model=list[KeyOut], status_code=201)
def add_keys(name: VisibleMember, body: KeyAdd, svc: ServicesDep) -> list[KeyOut]:
    """Add SSH public keys (installed at once when the container runs). Returns all keys."""
    members.add_keys(svc, name, [body.key])
    return [KeyOut.model_validate(k) for k in members.list_keys(svc, name)]


@router.delete("/members/{name}/keys", status_code=204, responses=NO_CONTENT)
def remove_key(
    name: VisibleMember,
    svc: ServicesDep,
    fingerprint: Annotated[str, Query(max_length=255, description="SHA256:... or the key's comment")],
) -> Response:
    """Remove one SSH key by its fingerprint (or its comment, when unique)."""
    members.remove_key(svc, name, fingerprint)
    return Response(status_code=204)
