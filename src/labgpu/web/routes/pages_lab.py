"""Admin pages: every container (the status page), templates, shares, hosts and the audit log."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from labgpu.errors import N_, BadInput
from labgpu.services import members, portal, templates
from labgpu.services.context import Services
from labgpu.web.deps import AdminRequired, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome
from labgpu.web.templating import Renderer

router = APIRouter(include_in_schema=False)
AUDIT_PAGE = 100


@router.get("/admin/containers")
def containers_page(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    rows = members.list_containers(svc)
    return renderer.render(request, "admin_containers.html", rows=rows, section="containers")


@router.get("/admin/templates")
def templates_page(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    catalog = templates.catalog(svc.runtime)
    return renderer.render(
        request,
        "admin_templates.html",
        templates=catalog.templates,
        default_template=svc.settings.default_template,
        section="templates",
    )


def _shares_page(
    request: Request, renderer: Renderer, svc: Services, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    return renderer.render(
        request, "admin_shares.html", status_code, shares=members.list_shares(svc), section="shares", **extra
    )


@router.get("/admin/shares")
def shares_page(request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep) -> HTMLResponse:
    return _shares_page(request, renderer, svc, form={})


@router.post("/admin/shares")
def add_share(
    request: Request,
    _: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    name: Annotated[str, Form(max_length=63)] = "",
    source: Annotated[str, Form(max_length=4096)] = "",
    path: Annotated[str, Form(max_length=4096)] = "",
    readonly: Annotated[str, Form(max_length=8)] = "",
    all_members: Annotated[str, Form(max_length=8)] = "",
) -> HTMLResponse:
    form = {"name": name, "source": source, "path": path, "readonly": readonly, "all_members": all_members}
    with Outcome(request, renderer) as out:
        members.add_share(
            svc,
            name=name.strip(),
            source=source.strip(),
            path=path.strip(),
            readonly=readonly == "yes",
            all_members=all_members == "yes",
        )
        out.done(N_("The share %(name)s was added."), {"name": name}, form={})
    return out.show(functools.partial(_shares_page, request, renderer, svc), form=form)


@router.post("/admin/shares/{name}/remove")
def remove_share(
    name: str, request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        members.remove_share(svc, name)
        out.done(N_("The share %(name)s was removed; its host folder is untouched."), {"name": name})
    return out.show(functools.partial(_shares_page, request, renderer, svc), form={})


@router.get("/admin/hosts")
def hosts_page(request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep) -> HTMLResponse:
    return renderer.render(request, "admin_hosts.html", hosts=members.list_hosts(svc), section="hosts")


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
