"""Pages: my account (change password, personal API tokens, login sessions, log out everywhere)."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from labgpu.errors import N_, BadInput
from labgpu.services import portal
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome, Page
from labgpu.web.security import clear_session_cookie, client_address, forget_identity, set_session_cookie
from labgpu.web.templating import Renderer
from labgpu.web.terminals import end_terminals

router = APIRouter(include_in_schema=False)

PasswordField = Annotated[str, Form(max_length=1024)]
TOKEN_LIFETIMES = (30, 90, 365)


def _page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    identity: Identity,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    return renderer.render(
        request,
        "account.html",
        status_code,
        account=portal.get_account(svc, identity.name),
        tokens=portal.list_tokens(svc, identity),
        sessions=portal.list_sessions(svc, identity),
        current_session=(identity.session_id or "")[:8],
        lifetimes=TOKEN_LIFETIMES,
        totp_enabled=portal.totp_status(svc, identity).enabled,
        **extra,
    )


def _account(request: Request, renderer: Renderer, svc: Services, identity: Identity) -> Page:
    """My account's page, to show a form's outcome on."""
    return functools.partial(_page, request, renderer, svc, identity)


@router.get("/account")
def account(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _page(request, renderer, svc, identity)


@router.post("/account/password")
def change_password(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    current_password: PasswordField = "",
    new_password: PasswordField = "",
    confirm_password: PasswordField = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        if new_password != confirm_password:
            raise BadInput(N_("The two new passwords differ."))
        portal.change_password(
            svc, identity, current=current_password, new=new_password, source_address=client_address(request)
        )
    if out.failed:
        return out.show(_account(request, renderer, svc, identity))
    fresh = portal.start_session(
        svc, identity, source_address=client_address(request), user_agent=request.headers.get("user-agent")
    )
    forget_identity(request, fresh.identity)
    out.done(N_("Your password was changed. Your other login sessions have ended."))
    response = out.show(_account(request, renderer, svc, fresh.identity))
    set_session_cookie(request, response, fresh.token)
    return response


@router.post("/account/tokens")
def create_token(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    name: Annotated[str, Form(max_length=64)] = "",
    expires_days: Annotated[str, Form(max_length=8)] = "90",
) -> HTMLResponse:
    try:
        days = int(expires_days) if expires_days.strip() else None
    except ValueError:
        days = -1  # refused by the service with its message
    with Outcome(request, renderer) as out:
        token, info = portal.create_token(svc, identity, name=name, expires_days=days)
        out.shown.update(new_token=token, new_token_info=info)
    return out.show(_account(request, renderer, svc, identity))


@router.post("/account/tokens/{token_id}/revoke")
def revoke_token(
    token_id: int, request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        portal.revoke_token(svc, identity, token_id)
        out.done(N_("The token was revoked."))
    return out.show(_account(request, renderer, svc, identity))


@router.post("/account/logout-everywhere")
def logout_everywhere(request: Request, identity: CurrentMember, svc: ServicesDep) -> RedirectResponse:
    portal.end_all_sessions(svc, identity)
    end_terminals(request, account=identity.name)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    forget_identity(request, None)
    return response
