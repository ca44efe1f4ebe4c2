"""Admin pages of the portal: the applications queue (approve with changes, reject with a reason,
progress) and the audit log."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from labgpu.errors import N_, BadInput, LabgpuError
from labgpu.services import portal, templates
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


AUDIT_PAGE = 100


def _day(text: str, what: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
    except ValueError:
        raise BadInput(f"{what}: give a date as YYYY-MM-DD") from None


@router.get("/admin/audit")
def audit_page(
    request: Request,
    _: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    actor: str = "",
    action: str = "",
    target: str = "",
    since: str = "",
    until: str = "",
    before_id: int | None = None,
) -> HTMLResponse:
    filters = {
        "actor": actor[:64],
        "action": action[:64],
        "target": target[:255],
        "since": since,
        "until": until,
    }
    until_day = _day(until, "until")
    entries = portal.list_events(
        svc,
        actor=filters["actor"].strip() or None,
        action=filters["action"].strip() or None,
        target=filters["target"].strip() or None,
        since=_day(since, "since"),
        until=until_day + timedelta(days=1) if until_day else None,  # the whole "until" day
        before_id=before_id,
        limit=AUDIT_PAGE,
    )
    more = entries[-1].id if len(entries) == AUDIT_PAGE else None
    return renderer.render(
        request, "admin_audit.html", entries=entries, filters=filters, more=more, section="audit"
    )
