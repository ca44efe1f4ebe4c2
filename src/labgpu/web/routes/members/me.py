"""Pages: my container (state, limits, uptime, connection sheet, start/stop/restart, no-GPU mode, reset, the
container's password, the VNC password, snapshots, SSH keys) and its downloads. Every action is on the logged-in member's own
container: there is no name in these forms to tamper with."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse

from labgpu.errors import N_, BadInput, LabgpuError, NotFound
from labgpu.services import gpus, members, portal
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome, Page
from labgpu.web.templating import Renderer
from labgpu.web.views import connection_sheet

router = APIRouter(include_in_schema=False)

POWER_DONE = {
    "start": N_("Your container was started."),
    "stop": N_("Your container was stopped."),
    "restart": N_("Your container was restarted."),
}
NO_GPU_DONE = {
    "on": N_("Your container has no GPU now (no-GPU mode)."),
    "off": N_("Your GPUs are back."),
}
SnapshotField = Annotated[str, Form(max_length=63)]


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
    snaps: list[members.SnapshotInfo] = []
    keys: list[dict[str, str]] = []
    uptime = None
    if info.container:
        keys = members.list_keys(svc, identity.name)
        if info.status not in ("missing", "unreachable"):
            try:
                snaps = members.list_snapshots(svc, identity.name)
            except LabgpuError:
                snaps = []
            if info.status == "Running":
                uptime = members.uptime_seconds(svc, info.container)
    return renderer.render(
        request,
        "me.html",
        status_code,
        member=info,
        sheet=sheet,
        snapshots=list(reversed(snaps)),
        keys=keys,
        uptime=uptime,
        my_templates=members.list_my_templates(svc, identity.name) if info.container else [],
        **extra,
    )


def _me(request: Request, renderer: Renderer, svc: Services, identity: Identity) -> Page:
    """My container's page, to show a form's outcome on."""
    return functools.partial(_page, request, renderer, svc, identity)


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
    with Outcome(request, renderer) as out:
        members.set_power(svc, identity.name, action)
        out.done(POWER_DONE[action])
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/no-gpu")
def no_gpu(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    no_gpu: Annotated[Literal["on", "off"], Form()],
) -> HTMLResponse:
    """No-GPU mode on (every GPU detached) or off (the GPUs back), one click each way."""
    with Outcome(request, renderer) as out:
        gpus.set_no_gpu(svc, identity.name, no_gpu == "on")
        out.done(NO_GPU_DONE[no_gpu])
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/reset")
def reset(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    confirm: Annotated[str, Form(max_length=64)] = "",
    template: Annotated[str, Form(max_length=255)] = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        if confirm.strip() != identity.name:
            raise BadInput(N_("type your name to confirm the reset"))
        if template and not members.is_member_template(template):
            # The portal offers the container's own template or one of the member's; nothing else.
            raise BadInput(N_("choose your container's template or one of your own templates"))
        sheet = members.reset_member(svc, identity.name, template=template or None)
        out.done(
            N_("Your container was rebuilt from its template. Your home folder was kept."),
            new_password=sheet.initial_password,
        )
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/container-password")
def container_password(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm_password: Annotated[str, Form(max_length=1024)] = "",
) -> HTMLResponse:
    """The container user's password, chosen by the member (for a remote desktop, sudo or password SSH):
    nobody else ever sees it, and it works at once, with no forced change."""
    with Outcome(request, renderer) as out:
        if password != confirm_password:
            raise BadInput(N_("The two passwords differ."))
        portal.check_password_strength(password, name=identity.name)
        members.set_container_password(svc, identity.name, password)
        out.done(N_("Your container's password was set. Use it for the remote desktop and password logins."))
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/vnc-password")
def vnc_password(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    password: Annotated[str, Form(max_length=1024)] = "",
    confirm_password: Annotated[str, Form(max_length=1024)] = "",
) -> HTMLResponse:
    """The VNC password, chosen by the member, apart from the container's password (VNC's own scheme is
    weak: members._desktop says why); setting it starts the container's VNC desktop. No SSH needed."""
    with Outcome(request, renderer) as out:
        if password != confirm_password:
            raise BadInput(N_("The two passwords differ."))
        portal.check_password_strength(password, name=identity.name)
        members.set_vnc_password(svc, identity.name, password)
        out.done(
            N_(
                "Your VNC password was set and your VNC desktop is running. Connect a VNC client to the VNC port."
            )
        )
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/snapshots")
def take_snapshot(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    name: SnapshotField = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        members.take_snapshot(svc, identity.name, name.strip() or None)
        out.done(N_("The snapshot was taken."))
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/snapshots/restore")
def restore_snapshot(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    snapshot: SnapshotField = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        members.restore_snapshot(svc, identity.name, snapshot)
        out.done(N_("Your container was restored from the snapshot."))
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/snapshots/delete")
def delete_snapshot(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    snapshot: SnapshotField = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        members.delete_snapshot(svc, identity.name, snapshot)
        out.done(N_("The snapshot was deleted."))
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/keys")
def add_key(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    key: Annotated[str, Form(max_length=16384)] = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        members.add_keys(svc, identity.name, [key])
        out.done(N_("The SSH key was added."))
    return out.show(_me(request, renderer, svc, identity))


@router.post("/me/keys/remove")
def remove_key(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    fingerprint: Annotated[str, Form(max_length=255)] = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        members.remove_key(svc, identity.name, fingerprint)
        out.done(N_("The SSH key was removed."))
    return out.show(_me(request, renderer, svc, identity))


def _sheet(svc: Services, identity: Identity) -> Any:
    sheet = connection_sheet(svc, members.get_member(svc, identity.name, live=False))
    if sheet is None:
        raise NotFound(N_("you have no container yet"))
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
        raise NotFound(N_("your container has no remote desktop port"))
    return PlainTextResponse(
        rdp,
        media_type="application/x-rdp",
        headers={"Content-Disposition": f'attachment; filename="labgpu-{identity.name}.rdp"'},
    )
