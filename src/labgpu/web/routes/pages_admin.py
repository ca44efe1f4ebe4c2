"""Admin pages: the applications queue (approve with changes, reject with a reason, progress) and the
members (search, disable/enable, limits and GPUs, removal with a typed confirmation)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from labgpu.errors import N_, BadInput, LabgpuError
from labgpu.services import members, portal, templates
from labgpu.services.context import Services
from labgpu.web.deps import AdminRequired, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome, Page
from labgpu.web.templating import Renderer

router = APIRouter(include_in_schema=False)

TextField = Annotated[str, Form(max_length=255)]


def _template_names(svc: Services) -> list[str]:
    try:
        return [t.name for t in templates.catalog(svc.runtime).templates]
    except LabgpuError:
        return []


# Applications ---------------------------------------------------------------------------------------


def _applications_page(
    request: Request, renderer: Renderer, svc: Services, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    return renderer.render(
        request,
        "admin_applications.html",
        status_code,
        applications=portal.list_applications(svc),
        template_names=_template_names(svc),
        default_template=svc.settings.default_template,
        default_gpus=svc.settings.default_gpus,
        section="applications",
        **extra,
    )


def _applications(request: Request, renderer: Renderer, svc: Services) -> Page:
    """The applications queue, to show a form's outcome on."""
    return functools.partial(_applications_page, request, renderer, svc)


@router.get("/admin")
def admin_home(_: AdminRequired) -> RedirectResponse:
    return RedirectResponse("/admin/applications", status_code=303)


@router.get("/admin/applications")
def applications_page(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _applications_page(request, renderer, svc)


@router.get("/admin/applications/{application_id}/progress")
def application_progress(
    application_id: int, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    """The status cell of one application (htmx polls it while the container is being made)."""
    return renderer.render(
        request, "admin_application_status.html", app=portal.get_application(svc, application_id)
    )


@router.post("/admin/applications/{application_id}/approve")
def approve(
    application_id: int,
    request: Request,
    _: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    template: TextField = "",
    cpu: Annotated[str, Form(max_length=8)] = "",
    memory: Annotated[str, Form(max_length=32)] = "",
    gpus: TextField = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        overrides = portal.parse_overrides(template=template, cpu=cpu, memory=memory, gpus=gpus)
        info = portal.approve(svc, application_id, overrides)
        request.app.state.worker.enqueue(info.id)
        out.done(N_("Approved: the container of %(name)s is being made."), {"name": info.name})
    return out.show(_applications(request, renderer, svc))


@router.post("/admin/applications/{application_id}/reject")
def reject(
    application_id: int,
    request: Request,
    _: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    background: BackgroundTasks,
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        info = portal.reject(svc, application_id, reason=reason)
        background.add_task(portal.notify_applicant, svc, info)
        out.done(N_("Rejected: %(name)s gets an e-mail with your reason."), {"name": info.name})
    return out.show(_applications(request, renderer, svc))


@router.post("/admin/applications/{application_id}/retry")
def retry(
    application_id: int, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        info = portal.retry(svc, application_id)
        request.app.state.worker.enqueue(info.id)
        out.done(N_("Trying again."))
    return out.show(_applications(request, renderer, svc))


# Members ---------------------------------------------------------------------------------------------


@router.get("/admin/members")
def members_page(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep, q: str = ""
) -> HTMLResponse:
    return _members_page(request, renderer, svc, q=q.strip()[:64])


def _members_page(
    request: Request, renderer: Renderer, svc: Services, status_code: int = 200, q: str = "", **extra: Any
) -> HTMLResponse:
    found = members.list_members(svc, live=True)
    disabled = {a.name for a in portal.list_accounts(svc) if a.disabled}
    if q:
        needle = q.lower()
        found = [m for m in found if needle in m.name or needle in (m.email or "").lower()]
    return renderer.render(
        request,
        "admin_members.html",
        status_code,
        members=found,
        disabled=disabled,
        q=q,
        section="members",
        **extra,
    )


def _member_page(
    request: Request, renderer: Renderer, svc: Services, name: str, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    return renderer.render(
        request,
        "admin_member.html",
        status_code,
        member=members.get_member(svc, name, live=True),
        account=portal.get_account(svc, name),
        section="members",
        **extra,
    )


def _member(request: Request, renderer: Renderer, svc: Services, name: str) -> Page:
    """A member's admin page, to show a form's outcome on."""
    return functools.partial(_member_page, request, renderer, svc, name)


@router.get("/admin/members/{name}")
def member_page(
    name: str, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _member_page(request, renderer, svc, name)


@router.post("/admin/members/{name}/disable")
def disable(
    name: str, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        portal.set_disabled(svc, name, disabled=True)
        out.done(N_("The account is disabled; its sessions and tokens have ended."))
    return out.show(_member(request, renderer, svc, name))


@router.post("/admin/members/{name}/enable")
def enable(
    name: str, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        portal.set_disabled(svc, name, disabled=False)
        out.done(N_("The account is enabled."))
    return out.show(_member(request, renderer, svc, name))


@router.post("/admin/members/{name}/limits")
def set_limits(
    name: str,
    request: Request,
    _: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    cpu: Annotated[str, Form(max_length=8)] = "",
    memory: Annotated[str, Form(max_length=32)] = "",
    gpus: TextField = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        request_ = members.parse_set_request(
            cpu=cpu.strip() or "none", memory=memory.strip() or "none", gpus=gpus.strip() or None
        )
        changes = members.set_member(svc, name, request_)
        if changes:
            listed = "; ".join(f"{c.setting} {c.old} → {c.new} ({c.applied})" for c in changes)
            out.done(N_("Changed: %(changes)s."), {"changes": listed})
        else:
            out.done(N_("Nothing to change."))
    return out.show(_member(request, renderer, svc, name))


@router.post("/admin/members/{name}/remove", response_model=None)
def remove(
    name: str,
    request: Request,
    identity: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    confirm: Annotated[str, Form(max_length=64)] = "",
    purge: Annotated[str, Form(max_length=8)] = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        if confirm.strip() != name:
            raise BadInput(N_("type the member's name to confirm the removal"))
        if identity.name == name:
            raise BadInput(N_("you cannot remove your own account"))
        removal = members.remove_member(svc, name, purge=purge == "yes")
        if removal.purged:
            out.done(N_("%(name)s was removed, and their home folder deleted."), {"name": name})
        else:
            out.done(
                N_("%(name)s was removed; their home folder was kept in %(path)s."),
                {"name": name, "path": removal.archived_to or "—"},
            )
    if out.failed:
        return out.show(_member(request, renderer, svc, name))
    return out.show(functools.partial(_members_page, request, renderer, svc))
