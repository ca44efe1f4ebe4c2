"""JSON API: members and their containers. Admins see everyone; a member sees and acts on themself only
(anyone else is answered 404, as for a name that does not exist)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from labgpu.errors import NotFound
from labgpu.services import members, portal
from labgpu.web.deps import AdminRequired, ServicesDep, VisibleMember
from labgpu.web.schemas import ERROR_RESPONSES, AccountOut, ConnectionOut, MemberOut, PowerOut
from labgpu.web.views import connection_sheet

router = APIRouter(prefix="/api/v1", tags=["members"], responses=ERROR_RESPONSES)


@router.get("/members", response_model=list[MemberOut])
def list_members(_: AdminRequired, svc: ServicesDep, live: bool = True) -> list[MemberOut]:
    """Every member with their container's state (live: one listing request to the daemon). Admins only."""
    return [MemberOut(**m.as_dict()) for m in members.list_members(svc, live=live)]


@router.get("/accounts", response_model=list[AccountOut])
def list_accounts(_: AdminRequired, svc: ServicesDep, admins_only: bool = False) -> list[AccountOut]:
    """Every member's portal account: role, whether they have a password, disabled. Admins only."""
    return [AccountOut(**a.as_dict()) for a in portal.list_accounts(svc, admins_only=admins_only)]


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
def disable_member(name: str, _: AdminRequired, svc: ServicesDep) -> AccountOut:
    """Disable a member's account: ends their login sessions and revokes their API tokens. Admins only."""
    portal.set_disabled(svc, name, disabled=True)
    return AccountOut(**portal.get_account(svc, name).as_dict())


@router.post("/members/{name}/enable", response_model=AccountOut)
def enable_member(name: str, _: AdminRequired, svc: ServicesDep) -> AccountOut:
    """Enable a disabled account again (revoked sessions and tokens stay revoked). Admins only."""
    portal.set_disabled(svc, name, disabled=False)
    return AccountOut(**portal.get_account(svc, name).as_dict())


@router.post("/members/{name}/{action}", response_model=PowerOut)
def power(name: VisibleMember, action: Literal["start", "stop", "restart"], svc: ServicesDep) -> PowerOut:
    """Start, stop or restart the member's container (waits for the daemon). Admin or the member."""
    return PowerOut(name=name, status=members.set_power(svc, name, action))
