"""Conversions from service results to what pages and the API show."""

from __future__ import annotations

from labgpu.services import members
from labgpu.services.context import Services
from labgpu.services.members import ConnectionSheet, MemberInfo


def connection_sheet(svc: Services, info: MemberInfo) -> ConnectionSheet | None:
    """The connection sheet of a member's container (no password: that is shown once, at provisioning);
    None when the member has no container with an SSH port."""
    if not info.container or "ssh" not in info.ports:
        return None
    return ConnectionSheet(
        name=info.name,
        container=info.container,
        host=info.host or "",
        address=info.address or svc.settings.public_address or "localhost",
        user=svc.settings.container_user,
        state=info.status,
        ports=dict(info.ports),
        home=info.home,
        container_home=members.container_home(svc, info.name),
    )
