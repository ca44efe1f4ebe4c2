"""Typed FastAPI dependencies: who is asking, the services acting for them, and object-level checks.

- ``SessionDep``: the caller's :class:`~labgpu.services.portal._accounts.Identity` (a login session or, under /api,
  a personal API token), or None for a visitor.
- ``CurrentMember``: the caller, required (401 under /api; a page redirects to the login form).
- ``AdminRequired``: the caller, required to be an admin (403 otherwise).
- ``ServicesDep``: :class:`~labgpu.services.context.Services` whose actor is the caller and their address,
  so every audit entry says who did it and from where.
- ``GpuUsageDep``: the app's :class:`~labgpu.services.gpus._usage.GpuUsageReader` (every host's GPUs).
- ``VisibleMember``: the ``{name}`` path parameter, checked with :func:`check_member_access`: an admin sees
  every member, a member only themself; anyone else gets 404, exactly as for a name that does not exist.

Routes stay thin: they take these, call a service, and convert the result to a schema or a page.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import Depends, Path, Request

from labgpu.errors import N_, NotFound
from labgpu.services.context import Actor, Services
from labgpu.services.gpus import GpuUsageReader
from labgpu.services.portal import Forbidden, Identity, Unauthenticated, enrolment_required_error
from labgpu.web.security import client_address, request_identity
from labgpu.web.templating import Renderer


def get_identity(request: Request) -> Identity | None:
    return request_identity(request)


SessionDep = Annotated[Identity | None, Depends(get_identity)]


def require_member(identity: SessionDep) -> Identity:
    if identity is None:
        raise Unauthenticated(
            N_("log in first, or send a personal API token (Authorization: Bearer lgp_...)")
        )
    return identity


CurrentMember = Annotated[Identity, Depends(require_member)]


def require_admin(identity: CurrentMember) -> Identity:
    if identity.totp_due:  # an admin whose required second factor is missing: set it up first
        raise enrolment_required_error()
    if not identity.is_admin:
        raise Forbidden(N_("only an admin may do this"))
    return identity


AdminRequired = Annotated[Identity, Depends(require_admin)]


def get_services(request: Request, identity: SessionDep) -> Services:
    base: Services = request.app.state.services
    actor = Actor(
        name=identity.name if identity else "anonymous",
        source_address=client_address(request),
        is_admin=bool(identity and identity.is_admin),
    )
    return dataclasses.replace(base, actor=actor)


ServicesDep = Annotated[Services, Depends(get_services)]


def get_renderer(request: Request) -> Renderer:
    renderer: Renderer = request.app.state.renderer
    return renderer


RendererDep = Annotated[Renderer, Depends(get_renderer)]


def check_member_access(identity: Identity, name: str) -> str:
    """Object-level check for anything that belongs to member ``name``: admins may, the member may,
    others get the same NotFound as for a member that does not exist (existence is not leaked)."""
    # A name with a control character (NUL among them, which PostgreSQL refuses) names nobody.
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise NotFound(f"no member named {name!r}")
    if identity.is_admin or identity.name == name:
        return name
    raise NotFound(f"no member named {name}")


def visible_member(identity: CurrentMember, name: Annotated[str, Path(max_length=64)]) -> str:
    return check_member_access(identity, name)


VisibleMember = Annotated[str, Depends(visible_member)]


def get_gpu_usage(request: Request) -> GpuUsageReader:
    reader: GpuUsageReader = request.app.state.gpu_usage
    return reader


GpuUsageDep = Annotated[GpuUsageReader, Depends(get_gpu_usage)]
