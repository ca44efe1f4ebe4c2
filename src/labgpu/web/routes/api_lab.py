"""JSON API: the lab as admins see it: every container, hosts, templates, shares, and changing or
removing a member. Admins only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from labgpu.errors import N_, BadInput
from labgpu.services import members, templates
from labgpu.web.deps import AdminRequired, ServicesDep
from labgpu.web.schemas import (
    ERROR_RESPONSES,
    ChangeOut,
    ContainerOut,
    HostOut,
    MemberChange,
    RemovalOut,
    ShareCreate,
    ShareOut,
    TemplateOut,
)

router = APIRouter(prefix="/api/v1", tags=["lab"], responses=ERROR_RESPONSES)


@router.get("/containers", response_model=list[ContainerOut])
def list_containers(_: AdminRequired, svc: ServicesDep) -> list[ContainerOut]:
    """Every instance on the hosts (ONE listing request per host): state, IP, ports, GPUs, owner;
    instances labgpu does not own are listed as foreign."""
    return [ContainerOut.model_validate(c.as_dict()) for c in members.list_containers(svc)]


@router.get("/hosts", response_model=list[HostOut])
def list_hosts(_: AdminRequired, svc: ServicesDep) -> list[HostOut]:
    """The hosts in the store, with their member counts and whether the daemon answers."""
    return [HostOut.model_validate(h.as_dict()) for h in members.list_hosts(svc)]


@router.get("/templates", response_model=list[TemplateOut])
def list_templates(_: AdminRequired, svc: ServicesDep) -> list[TemplateOut]:
    """Every template with its versions and the containers using each."""
    return [TemplateOut.model_validate(t.as_dict()) for t in templates.catalog(svc.runtime).templates]


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
