"""Admin pages of members: the list (search), a member (disable/enable, limits and GPUs, no-GPU mode, removal with a
typed confirmation), every container (the status page) and the shares."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from labgpu.errors import N_, BadInput
from labgpu.services import gpus, members, portal
from labgpu.services.context import Services
from labgpu.web.deps import AdminRequired, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome, Page
from labgpu.web.templating import Renderer
from labgpu.web.terminals import end_terminals

router = APIRouter(include_in_schema=False)


TextField = Annotated[str, Form(max_length=255)]


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
        end_terminals(request, account=name)
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


@router.post("/admin/members/{name}/no-gpu")
def no_gpu(
    name: str,
    request: Request,
    _: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    no_gpu: Annotated[Literal["on", "off"], Form()],
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        gpus.set_no_gpu(svc, name, no_gpu == "on")
        if no_gpu == "on":
            out.done(N_("%(name)s's container has no GPU now (no-GPU mode)."), {"name": name})
        else:
            out.done(N_("%(name)s's container has its GPUs back."), {"name": name})
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


@router.get("/admin/containers")
def containers_page(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    rows = members.list_containers(svc)
    return renderer.render(request, "admin_containers.html", rows=rows, section="containers")


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
