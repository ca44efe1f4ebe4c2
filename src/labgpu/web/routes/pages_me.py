"""Pages: my container (state, ports, connection sheet, start/stop/restart) and its downloads."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from labgpu.errors import LabgpuError, NotFound
from labgpu.services import members
from labgpu.services.accounts import Identity
from labgpu.services.context import Services
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep
from labgpu.web.messages import translate
from labgpu.web.templating import N_, Renderer
from labgpu.web.views import connection_sheet

router = APIRouter(include_in_schema=False)

POWER_DONE = {
    "start": N_("Your container was started."),
    "stop": N_("Your container was stopped."),
    "restart": N_("Your container was restarted."),
}


def _page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    identity: Identity,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    info = members.get_member(svc, identity.name, live=True)
    sheet = connection_sheet(svc, info)
    return renderer.render(request, "me.html", status_code, member=info, sheet=sheet, **extra)


@router.get("/me")
def me(request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep) -> HTMLResponse:
    return _page(request, renderer, svc, identity)


@router.post("/me/power")
def power(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    action: Annotated[Literal["start", "stop", "restart"], Form()],
) -> HTMLResponse:
    gettext = renderer.gettext(request)
    try:
        members.set_power(svc, identity.name, action)
    except LabgpuError as exc:
        return _page(request, renderer, svc, identity, exc.status, error=translate(gettext, exc.message))
    return _page(request, renderer, svc, identity, notice=gettext(POWER_DONE[action]))


def _sheet(svc: Services, identity: Identity) -> Any:
    sheet = connection_sheet(svc, members.get_member(svc, identity.name, live=False))
    if sheet is None:
        raise NotFound("you have no container yet")
    return sheet


@router.get("/me/ssh-config")
def ssh_config(identity: CurrentMember, svc: ServicesDep) -> PlainTextResponse:
    """The ~/.ssh/config block, as a file to download."""
    sheet = _sheet(svc, identity)
    return PlainTextResponse(
        sheet.ssh_config(),
        headers={"Content-Disposition": f'attachment; filename="labgpu-{identity.name}.ssh-config"'},
    )


@router.get("/me/connection.rdp")
def rdp_file(identity: CurrentMember, svc: ServicesDep) -> PlainTextResponse:
    """A .rdp file for Remote Desktop clients (when the container has an RDP port)."""
    rdp = _sheet(svc, identity).rdp_file()
    if rdp is None:
        raise NotFound("your container has no remote desktop port")
    return PlainTextResponse(
        rdp,
        media_type="application/x-rdp",
        headers={"Content-Disposition": f'attachment; filename="labgpu-{identity.name}.rdp"'},
    )
