"""The hosts, as admins see them: ``/api/v1/hosts`` and the hosts page (member counts, whether each daemon
answers)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from labgpu.services import members
from labgpu.web.deps import AdminRequired, RendererDep, ServicesDep
from labgpu.web.schemas import ERROR_RESPONSES, HostOut

# One router for the API route and the page: FastAPI's nested routers are not worth it for two routes.
router = APIRouter(tags=["hosts"], responses=ERROR_RESPONSES)


@router.get("/api/v1/hosts", response_model=list[HostOut])
def list_hosts(_: AdminRequired, svc: ServicesDep) -> list[HostOut]:
    """The hosts in the store, with their member counts and whether the daemon answers."""
    return [HostOut.model_validate(h.as_dict()) for h in members.list_hosts(svc)]


@router.get("/admin/hosts", include_in_schema=False)
def hosts_page(request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep) -> HTMLResponse:
    return renderer.render(request, "admin_hosts.html", hosts=members.list_hosts(svc), section="hosts")
