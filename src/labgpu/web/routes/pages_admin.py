"""Admin pages: the applications queue (approve with changes, reject with a reason, progress) and the
members (search, disable/enable, limits and GPUs, removal with a typed confirmation)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from labgpu.errors import N_, BadInput, LabgpuError
from labgpu.services import members, portal, templates
from labgpu.services.context import Services
from labgpu.web.deps import AdminRequired, RendererDep, ServicesDep
from labgpu.web.templating import Renderer, translate

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


def _application_failed(
    request: Request, renderer: Renderer, svc: Services, exc: LabgpuError
) -> HTMLResponse:
    message = translate(renderer.gettext(request), exc)
    return _applications_page(request, renderer, svc, exc.status, error=message)


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
    try:
        overrides = portal.parse_overrides(template=template, cpu=cpu, memory=memory, gpus=gpus)
        info = portal.approve(svc, application_id, overrides)
    except LabgpuError as exc:
        return _application_failed(request, renderer, svc, exc)
    request.app.state.worker.enqueue(info.id)
    notice = renderer.gettext(request)(N_("Approved: the container of %(name)s is being made."))
    return _applications_page(request, renderer, svc, notice=notice % {"name": info.name})


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
    try:
        info = portal.reject(svc, application_id, reason=reason)
    except LabgpuError as exc:
        return _application_failed(request, renderer, svc, exc)
    background.add_task(portal.notify_applicant, svc, info)
    notice = renderer.gettext(request)(N_("Rejected: %(name)s gets an e-mail with your reason."))
    return _applications_page(request, renderer, svc, notice=notice % {"name": info.name})


@router.post("/admin/applications/{application_id}/retry")
def retry(
    application_id: int, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    try:
        info = portal.retry(svc, application_id)
    except LabgpuError as exc:
        return _application_failed(request, renderer, svc, exc)
    request.app.state.worker.enqueue(info.id)
    return _applications_page(request, renderer, svc, notice=renderer.gettext(request)(N_("Trying again.")))


# Members ---------------------------------------------------------------------------------------------


@router.get("/admin/members")
def members_page(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep, q: str = ""
) -> HTMLResponse:
    q = q.strip()[:64]
    found = members.list_members(svc, live=True)
    disabled = {a.name for a in portal.list_accounts(svc) if a.disabled}
    if q:
        needle = q.lower()
        found = [m for m in found if needle in m.name or needle in (m.email or "").lower()]
    return renderer.render(
        request, "admin_members.html", members=found, disabled=disabled, q=q, section="members"
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


def _member_failed(
    request: Request, renderer: Renderer, svc: Services, name: str, exc: LabgpuError
) -> HTMLResponse:
    message = translate(renderer.gettext(request), exc)
    return _member_page(request, renderer, svc, name, exc.status, error=message)


@router.get("/admin/members/{name}")
def member_page(
    name: str, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _member_page(request, renderer, svc, name)


@router.post("/admin/members/{name}/disable")
def disable(
    name: str, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    try:
        portal.set_disabled(svc, name, disabled=True)
    except LabgpuError as exc:
        return _member_failed(request, renderer, svc, name, exc)
    notice = renderer.gettext(request)(N_("The account is disabled; its sessions and tokens have ended."))
    return _member_page(request, renderer, svc, name, notice=notice)


@router.post("/admin/members/{name}/enable")
def enable(
    name: str, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    try:
        portal.set_disabled(svc, name, disabled=False)
    except LabgpuError as exc:
        return _member_failed(request, renderer, svc, name, exc)
    return _member_page(
        request, renderer, svc, name, notice=renderer.gettext(request)(N_("The account is enabled."))
    )


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
    try:
        request_ = members.parse_set_request(
            cpu=cpu.strip() or "none", memory=memory.strip() or "none", gpus=gpus.strip() or None
        )
        changes = members.set_member(svc, name, request_)
    except LabgpuError as exc:
        return _member_failed(request, renderer, svc, name, exc)
    gettext = renderer.gettext(request)
    notice = gettext(N_("Changed: %(changes)s.")) % {
        "changes": "; ".join(f"{c.setting} {c.old} → {c.new} ({c.applied})" for c in changes)
    }
    if not changes:
        notice = gettext(N_("Nothing to change."))
    return _member_page(request, renderer, svc, name, notice=notice)


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
    try:
        if confirm.strip() != name:
            raise BadInput(N_("type the member's name to confirm the removal"))
        if identity.name == name:
            raise BadInput(N_("you cannot remove your own account"))
        removal = members.remove_member(svc, name, purge=purge == "yes")
    except LabgpuError as exc:
        return _member_failed(request, renderer, svc, name, exc)
    gettext = renderer.gettext(request)
    if removal.purged:
        notice = gettext(N_("%(name)s was removed, and their home folder deleted.")) % {"name": name}
    else:
        notice = gettext(N_("%(name)s was removed; their home folder was kept in %(path)s.")) % {
            "name": name,
            "path": removal.archived_to or "—",
        }
    found = members.list_members(svc, live=True)
    disabled = {a.name for a in portal.list_accounts(svc) if a.disabled}
    return renderer.render(
        request,
        "admin_members.html",
        members=found,
        disabled=disabled,
        q="",
        section="members",
        notice=notice,
    )
