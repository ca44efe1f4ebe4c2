"""Pages: applying for an account (a visitor's form; the admins decide)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labgpu.errors import N_, LabgpuError
from labgpu.services import portal
from labgpu.services.portal import Throttled
from labgpu.web.deps import RendererDep, ServicesDep, SessionDep
from labgpu.web.security import client_address
from labgpu.web.templating import translate

router = APIRouter(include_in_schema=False)

ShortField = Annotated[str, Form(max_length=254)]
PasswordField = Annotated[str, Form(max_length=1024)]


@router.get("/apply", response_model=None)
def apply_form(request: Request, identity: SessionDep, svc: ServicesDep, renderer: RendererDep) -> Response:
    if identity is not None:
        return RedirectResponse("/me", status_code=303)
    return renderer.render(request, "apply.html", form={}, open=svc.settings.applications_open)


@router.post("/apply")
def apply(
    request: Request,
    svc: ServicesDep,
    renderer: RendererDep,
    background: BackgroundTasks,
    name: Annotated[str, Form(max_length=64)] = "",
    email: ShortField = "",
    password: PasswordField = "",
    confirm_password: PasswordField = "",
    supervisor: Annotated[str, Form(max_length=128)] = "",
    group_name: Annotated[str, Form(max_length=128)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> HTMLResponse:
    gettext = renderer.gettext(request)
    form = {
        "name": name,
        "email": email,
        "supervisor": supervisor,
        "group_name": group_name,
        "reason": reason,
    }

    def failed(status: int, message: str) -> HTMLResponse:
        return renderer.render(
            request, "apply.html", status, form=form, error=message, open=svc.settings.applications_open
        )

    if password != confirm_password:
        return failed(400, gettext(N_("The two passwords differ.")))
    try:
        info = portal.submit(
            svc,
            name=name,
            email=email,
            password=password,
            supervisor=supervisor,
            group_name=group_name,
            reason=reason,
            source_address=client_address(request),
        )
    except Throttled as exc:
        minutes = max(1, (exc.retry_after + 59) // 60)
        message = gettext(N_("Too many applications from your address. Try again in %(minutes)s minutes."))
        response = failed(429, message % {"minutes": minutes})
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except LabgpuError as exc:
        return failed(exc.status, translate(gettext, exc))
    background.add_task(portal.notify_admins, svc, info)
    return renderer.render(request, "apply_done.html", application=info)
