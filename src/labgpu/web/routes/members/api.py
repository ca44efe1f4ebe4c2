"""The members' API under /api/v1: members and their containers (power, reset, snapshots, SSH keys,
connection), the lab's containers and shares.

The container's routes come first: ``/members/{name}/reset`` must not be taken for ``/members/{name}/{action}``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response

from labgpu.errors import N_, BadInput, NotFound
from labgpu.services import gpus, members, portal
from labgpu.services.portal import Forbidden
from labgpu.web.deps import AdminRequired, CurrentMember, ServicesDep, VisibleMember
from labgpu.web.schemas import (
    ERROR_RESPONSES,
    AccountOut,
    ChangeOut,
    ConnectionOut,
    ContainerOut,
    InitialPasswordOut,
    KeyAdd,
    KeyOut,
    MemberChange,
    MemberOut,
    PowerOut,
    RemovalOut,
    ResetOut,
    ResetRequest,
    ShareCreate,
    ShareOut,
    SnapshotCreate,
    SnapshotOut,
    SnapshotTaken,
)
from labgpu.web.schemas_gpus import NoGpuChange, NoGpuOut
from labgpu.web.terminals import end_terminals
from labgpu.web.views import connection_sheet

router = APIRouter(prefix="/api/v1", tags=["members"], responses=ERROR_RESPONSES)


NO_CONTENT: dict[int | str, dict[str, Any]] = {204: {"description": "Done"}}


@router.post("/members/{name}/reset", response_model=ResetOut)
def reset(name: VisibleMember, body: ResetRequest, identity: CurrentMember, svc: ServicesDep) -> ResetOut:
    """Rebuild the container from its template, keeping the home folder, ports and keys (everything else
    in it is lost). Waits until sshd answers. The answer holds a new first-login password, shown once."""
    if body.confirm != name:
        raise BadInput(N_("type the member's name to confirm the reset"))
    if body.template and not identity.is_admin and not members.is_member_template(body.template):
        # A member may choose one of their own templates (the service refuses anybody else's).
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


@router.get("/members", response_model=list[MemberOut])
def list_members(_: AdminRequired, svc: ServicesDep, live: bool = True) -> list[MemberOut]:
    """Every member with their container's state (live: one listing request to the daemon). Admins only."""
    return [MemberOut(**m.as_dict()) for m in members.list_members(svc, live=live)]


@router.get("/members/{name}", response_model=MemberOut)
def show_member(name: VisibleMember, svc: ServicesDep, live: bool = True) -> MemberOut:
    """One member with their container's live state."""
    return MemberOut(**members.get_member(svc, name, live=live).as_dict())


@router.get("/members/{name}/connection", response_model=ConnectionOut)
def show_connection(name: VisibleMember, svc: ServicesDep) -> ConnectionOut:
    """How to connect to the member's container: ssh command, ~/.ssh/config block, RDP file."""
    sheet = connection_sheet(svc, members.get_member(svc, name, live=True))
    if sheet is None:
        raise NotFound(f"{name} has no container yet")
    return ConnectionOut.model_validate(sheet.as_dict(with_password=False))


@router.post("/members/{name}/disable", response_model=AccountOut)
def disable_member(name: str, request: Request, _: AdminRequired, svc: ServicesDep) -> AccountOut:
    """Disable a member's account: ends their login sessions and revokes their API tokens. Admins only."""
    portal.set_disabled(svc, name, disabled=True)
    end_terminals(request, account=name)
    return AccountOut(**portal.get_account(svc, name).as_dict())


@router.post("/members/{name}/enable", response_model=AccountOut)
def enable_member(name: str, _: AdminRequired, svc: ServicesDep) -> AccountOut:
    """Enable a disabled account again (revoked sessions and tokens stay revoked). Admins only."""
    portal.set_disabled(svc, name, disabled=False)
    return AccountOut(**portal.get_account(svc, name).as_dict())


@router.post("/members/{name}/no-gpu", response_model=NoGpuOut)
def set_no_gpu(name: VisibleMember, body: NoGpuChange, svc: ServicesDep) -> NoGpuOut:
    """No-GPU mode: ``no_gpu: true`` detaches every GPU from the container (live when it runs; its GPU
    choice is kept), ``false`` gives them back. Kept by reconcile; booked GPUs wait until it is off.
    Admin or the member."""
    return NoGpuOut.model_validate(gpus.set_no_gpu(svc, name, body.no_gpu).as_dict())


@router.post("/members/{name}/{action}", response_model=PowerOut)
def power(name: VisibleMember, action: Literal["start", "stop", "restart"], svc: ServicesDep) -> PowerOut:
    """Start, stop or restart the member's container (waits for the daemon). Admin or the member."""
    return PowerOut(name=name, status=members.set_power(svc, name, action))


@router.get("/containers", response_model=list[ContainerOut])
def list_containers(_: AdminRequired, svc: ServicesDep) -> list[ContainerOut]:
    """Every instance on the hosts (ONE listing request per host): state, IP, ports, GPUs, owner;
    instances labgpu does not own are listed as foreign."""
    return [ContainerOut.model_validate(c.as_dict()) for c in members.list_containers(svc)]


@router.get("/shares", response_model=list[ShareOut])
def list_shares(_: AdminRequired, svc: ServicesDep) -> list[ShareOut]:
    """Shared host folders and who has them."""
    return [ShareOut.model_validate(s.as_dict()) for s in members.list_shares(svc)]


@router.post("/shares", response_model=ShareOut, status_code=201)
def add_share(body: ShareCreate, _: AdminRequired, svc: ServicesDep) -> ShareOut:
    """Record a share (with all_members: mounted into every container at once, through the profile)."""
    info = members.add_share(
        svc,
        name=body.name,
        source=body.source,
        path=body.path,
        readonly=body.readonly,
        all_members=body.all_members,
    )
    return ShareOut.model_validate(info.as_dict())


@router.delete("/shares/{share}", status_code=204, responses={204: {"description": "Removed"}})
def remove_share(share: str, _: AdminRequired, svc: ServicesDep) -> Response:
    """Remove a share from every container and forget it. The host folder is not touched."""
    members.remove_share(svc, share)
    return Response(status_code=204)


@router.patch("/members/{name}", response_model=list[ChangeOut])
def change_member(name: str, body: MemberChange, _: AdminRequired, svc: ServicesDep) -> list[ChangeOut]:
    """Change a member's limits and GPUs (live when the container runs). Returns what changed."""
    request = members.parse_set_request(cpu=body.cpu, memory=body.memory, disk=body.disk, gpus=body.gpus)
    return [ChangeOut.model_validate(c.as_dict()) for c in members.set_member(svc, name, request)]


@router.delete("/members/{name}", response_model=RemovalOut)
def remove_member(
    name: str,
    _: AdminRequired,
    svc: ServicesDep,
    confirm: Annotated[str, Query(max_length=64, description="The member's name, typed again.")],
    purge: Annotated[bool, Query(description="Delete the home folder too (default: archive it).")] = False,
) -> RemovalOut:
    """Remove a member: their container is deleted, their home archived (deleted only with purge)."""
    if confirm != name:
        raise BadInput(N_("type the member's name to confirm the removal"))
    if svc.actor.name == name:
        raise BadInput(N_("you cannot remove your own account"))
    return RemovalOut.model_validate(members.remove_member(svc, name, purge=purge).as_dict())
