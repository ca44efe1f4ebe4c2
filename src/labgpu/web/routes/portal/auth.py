"""Pages: the front door, logging in and out, the language switch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labgpu.errors import N_
from labgpu.services import portal
from labgpu.web import i18n
from labgpu.web.deps import RendererDep, ServicesDep, SessionDep
from labgpu.web.routes.portal import signon, totp
from labgpu.web.security import (
    clear_session_cookie,
    client_address,
    forget_identity,
    safe_next,
    set_cookie,
    set_session_cookie,
)
from labgpu.web.templating import translate
from labgpu.web.terminals import end_terminals

router = APIRouter(include_in_schema=False)

NameField = Annotated[str, Form(max_length=64)]
PasswordField = Annotated[str, Form(max_length=1024)]
NextField = Annotated[str, Form(max_length=2048)]


@router.get("/")
def front(identity: SessionDep) -> RedirectResponse:
    return RedirectResponse("/me" if identity else "/login", status_code=303)


@router.get("/login", response_model=None)
def login_form(request: Request, identity: SessionDep, renderer: RendererDep, next: str = "/me") -> Response:
    if identity is not None:
        return RedirectResponse(safe_next(next, "/me"), status_code=303)
    return renderer.render(request, "login.html", next=safe_next(next, "/me"), name="")


@router.post("/login", response_model=None)
def login(
    request: Request,
    identity: SessionDep,
    svc: ServicesDep,
    renderer: RendererDep,
    name: NameField = "",
    password: PasswordField = "",
    next: NextField = "/me",
) -> Response:
    gettext = renderer.gettext(request)
    target = safe_next(next, "/me")
    try:
        # A local account's password, else the directory's (LDAP/AD): services/portal/_signon.py.
        new = portal.password_login(
            svc,
            name=name,
            password=password,
            source_address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    except portal.BackendDown as exc:
        return renderer.render(
            request, "login.html", exc.status, error=translate(gettext, exc), name=name, next=target
        )
    except portal.Throttled as exc:
        message = gettext(N_("Too many failed logins. Try again in %(minutes)s minutes.")) % {
            "minutes": exc.minutes
        }
        response: HTMLResponse = renderer.render(
            request, "login.html", 429, error=message, name=name, next=target
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except portal.LoginFailed as exc:
        return renderer.render(
            request, "login.html", 401, error=translate(gettext, exc), name=name, next=target
        )
    if isinstance(new, portal.SecondStep):  # two-factor log-in: the code comes next, then the session
        return totp.ask_for_code(request, new, target)
    if isinstance(new, portal.Unlinked | portal.Waiting):  # a directory user without an account yet
        return signon.land(request, renderer, svc, identity, new, target)
    if identity is not None:
        # Logging in again in the same browser: the previous session ends (one browser, one session).
        portal.end_session(svc, identity)
    redirect = RedirectResponse(totp.after_login(svc, new.identity, target), status_code=303)
    set_session_cookie(request, redirect, new.token)
    forget_identity(request, new.identity)
    return redirect


@router.post("/logout")
def logout(request: Request, identity: SessionDep, svc: ServicesDep) -> RedirectResponse:
    if identity is not None:
        portal.end_session(svc, identity)
        if identity.session_id is not None:
            end_terminals(request, session_id=identity.session_id)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    forget_identity(request, None)
    return response


@router.post("/lang")
def choose_language(
    request: Request, lang: Annotated[str, Form(max_length=16)] = "", next: NextField = "/"
) -> RedirectResponse:
    response = RedirectResponse(safe_next(next), status_code=303)
    if lang in i18n.LOCALES:
        set_cookie(request, response, i18n.LANG_COOKIE, lang, max_age=365 * 24 * 3600)
    return response
