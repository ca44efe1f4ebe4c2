"""Pages: my templates (under My container): my container saved as a template of my own, from a snapshot
or as it is now, listed with size and date, used for a reset, deleted. Every action is on the logged-in
member's own templates: there is no member name in these forms to tamper with."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from labgpu.errors import N_, BadInput, LabgpuError
from labgpu.services import members
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome, Page
from labgpu.web.templating import Renderer

router = APIRouter(include_in_schema=False)

LabelField = Annotated[str, Form(max_length=40)]


def _page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    identity: Identity,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    info = members.get_member(svc, identity.name, live=False)
    snaps: list[members.SnapshotInfo] = []
    if info.container:
        try:
            snaps = members.list_snapshots(svc, identity.name)
        except LabgpuError:
            snaps = []
    templates = members.list_my_templates(svc, identity.name)
    settings = svc.settings
    return renderer.render(
        request,
        "my_templates.html",
        status_code,
        member=info,
        snapshots=list(reversed(snaps)),
        templates=templates,
        used_bytes=sum(t.size_bytes for t in templates),
        quota=settings.member_template_quota,
        quota_gib=settings.member_template_quota_gib,
        **extra,
    )


def _mine(request: Request, renderer: Renderer, svc: Services, identity: Identity) -> Page:
    return functools.partial(_page, request, renderer, svc, identity)


@router.get("/me/templates")
def my_templates(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _page(request, renderer, svc, identity)


@router.post("/me/templates")
def save(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    label: LabelField = "",
    snapshot: Annotated[str, Form(max_length=63)] = "",
    description: Annotated[str, Form(max_length=255)] = "",
) -> HTMLResponse:
    """Publish a snapshot (empty: one taken now) as my template: waits for the publish."""
    with Outcome(request, renderer) as out:
        saved = members.save_my_template(
            svc, identity.name, label.strip(), snapshot=snapshot.strip() or None, description=description
        )
        out.done(N_("Your container was saved as the template %(alias)s."), {"alias": saved.alias})
    return out.show(_mine(request, renderer, svc, identity))


@router.post("/me/templates/delete")
def delete(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep, label: LabelField = ""
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        members.remove_my_template(svc, identity.name, label)
        out.done(N_("The template was deleted. A container made from it keeps running."))
    return out.show(_mine(request, renderer, svc, identity))


@router.post("/me/templates/reset")
def reset_to(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    label: LabelField = "",
    confirm: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    """Rebuild my container from one of my templates (the home folder is kept)."""
    with Outcome(request, renderer) as out:
        template = members.get_my_template(svc, identity.name, label)
        if confirm.strip() != identity.name:
            raise BadInput(N_("type your name to confirm the reset"))
        sheet = members.reset_member(svc, identity.name, template=template.alias)
        out.done(
            N_("Your container was rebuilt from your template %(alias)s. Your home folder was kept."),
            {"alias": template.alias},
            new_password=sheet.initial_password,
        )
    return out.show(_mine(request, renderer, svc, identity))
