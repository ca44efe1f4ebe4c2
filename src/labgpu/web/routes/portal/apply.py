"""Pages: applying for an account (a visitor's form; the admins decide)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labgpu.errors import N_, BadInput
from labgpu.services import portal
from labgpu.services.portal import Throttled
from labgpu.web.deps import RendererDep, ServicesDep, SessionDep
from labgpu.web.outcome import Outcome
from labgpu.web.security import client_address

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
    form = {
        "name": name,
        "email": email,
        "supervisor": supervisor,
        "group_name": group_name,
        "reason": reason,
    }

    def page(status: int, **shown: object) -> HTMLResponse:
        return renderer.render(request, "apply.html", status, open=svc.settings.applications_open, **shown)

    with Outcome(request, renderer) as out:
        if password != confirm_password:
            raise BadInput(N_("The two passwords differ."))
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
    if isinstance(out.error, Throttled):
        retry_after = out.error.retry_after
        message = N_("Too many applications from your address. Try again in %(minutes)s minutes.")
        out.fail(Throttled(message, retry_after=retry_after, values={"minutes": out.error.minutes}))
        response = out.show(page, form=form)
        response.headers["Retry-After"] = str(retry_after)
        return response
    if out.failed:
        return out.show(page, form=form)
    background.add_task(portal.notify_admins, svc, info)
    return renderer.render(request, "apply_done.html", application=info)
