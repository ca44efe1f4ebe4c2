"""The templates, as admins see them: ``/api/v1/templates`` and the templates page (versions and the
containers using each), with every member's own templates (an admin may delete any)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from labgpu.errors import N_
from labgpu.services import members, templates
from labgpu.services.context import Services
from labgpu.web.deps import AdminRequired, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome
from labgpu.web.schemas import ERROR_RESPONSES, TemplateOut
from labgpu.web.templating import Renderer

# One router for the API route and the page: FastAPI's nested routers are not worth it for two routes.
router = APIRouter(tags=["templates"], responses=ERROR_RESPONSES)


@router.get("/api/v1/templates", response_model=list[TemplateOut])
def list_templates(_: AdminRequired, svc: ServicesDep) -> list[TemplateOut]:
    """Every template with its versions and the containers using each."""
    return [TemplateOut.model_validate(t.as_dict()) for t in templates.catalog(svc.runtime).templates]


def _page(
    request: Request, renderer: Renderer, svc: Services, status_code: int = 200, **extra: Any
) -> HTMLResponse:
    catalog = templates.catalog(svc.runtime)
    return renderer.render(
        request,
        "admin_templates.html",
        status_code,
        templates=catalog.templates,
        member_templates=members.list_my_templates(svc),
        default_template=svc.settings.default_template,
        section="templates",
        **extra,
    )


@router.get("/admin/templates", include_in_schema=False)
def templates_page(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _page(request, renderer, svc)


@router.post("/admin/member-templates/delete", include_in_schema=False)
def delete_member_template(
    request: Request,
    _: AdminRequired,
    svc: ServicesDep,
    renderer: RendererDep,
    owner: Annotated[str, Form(max_length=64)] = "",
    label: Annotated[str, Form(max_length=40)] = "",
) -> HTMLResponse:
    """Delete a member's own template (its image), as its owner can; audited with the admin as actor."""
    with Outcome(request, renderer) as out:
        members.remove_my_template(svc, owner, label)
        out.done(N_("The template was deleted. A container made from it keeps running."))
    return out.show(functools.partial(_page, request, renderer, svc))
