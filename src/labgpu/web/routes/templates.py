"""The templates, as admins see them: ``/api/v1/templates`` and the templates page (versions and the
containers using each)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from labgpu.services import templates
from labgpu.web.deps import AdminRequired, RendererDep, ServicesDep
from labgpu.web.schemas import ERROR_RESPONSES, TemplateOut

# One router for the API route and the page: FastAPI's nested routers are not worth it for two routes.
router = APIRouter(tags=["templates"], responses=ERROR_RESPONSES)


@router.get("/api/v1/templates", response_model=list[TemplateOut])
def list_templates(_: AdminRequired, svc: ServicesDep) -> list[TemplateOut]:
    """Every template with its versions and the containers using each."""
    return [TemplateOut.model_validate(t.as_dict()) for t in templates.catalog(svc.runtime).templates]


@router.get("/admin/templates", include_in_schema=False)
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
