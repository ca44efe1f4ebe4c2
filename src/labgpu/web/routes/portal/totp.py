"""Pages: two-factor log-in (TOTP). The code step of a log-in (``/login/totp``), and setting it up on my
account (``/account/totp``: a QR code and the secret as text, confirmed by a first code; recovery codes
shown once; new recovery codes; turning it off).

The password form (``auth.py``) hands over here through :func:`ask_for_code` when the member has TOTP, and
asks :func:`after_login` where a fresh session goes (an admin whose second factor is required but missing
goes to set it up first).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Annotated, Any
from urllib.parse import quote

import segno
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labgpu.errors import N_
from labgpu.services import portal
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.store.models import Role
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep, SessionDep
from labgpu.web.outcome import Outcome
from labgpu.web.security import (
    client_address,
    forget_identity,
    safe_next,
    set_cookie,
    set_session_cookie,
)
from labgpu.web.templating import Renderer, translate

router = APIRouter(include_in_schema=False)

PENDING_COOKIE = "labgpu_pending"
SETUP_PAGE = "/account/totp"
CodeField = Annotated[str, Form(max_length=64)]
NextField = Annotated[str, Form(max_length=2048)]
THROTTLED = N_("Too many failed logins. Try again in %(minutes)s minutes.")


def ask_for_code(request: Request, step: portal.SecondStep, target: str) -> RedirectResponse:
    """The answer to a right password of a member with TOTP: the code form, holding the pending log-in."""
    response = RedirectResponse(f"/login/totp?next={quote(target, safe='/')}", status_code=303)
    set_cookie(request, response, PENDING_COOKIE, step.token, max_age=step.seconds)
    return response


def after_login(svc: Services, identity: Identity, target: str) -> str:
    """Where a fresh login session goes: ``target``, or the set-up page while an admin's required second
    factor is missing."""
    granted = portal.with_second_factor_rule(svc, identity)
    if granted is not None and granted.totp_due:
        return f"{SETUP_PAGE}?next={quote(target, safe='/')}"
    return target


def _qr(uri: str) -> str:
    """The otpauth URI as a QR code: an SVG data URI for an <img> (the CSP allows data: images only)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


def _throttled(exc: portal.Throttled) -> portal.Throttled:
    return portal.Throttled(THROTTLED, retry_after=exc.retry_after, values={"minutes": exc.minutes})


# The code step of a log-in ---------------------------------------------------------------------------


@router.get("/login/totp", response_model=None)
def code_form(
    request: Request, identity: SessionDep, svc: ServicesDep, renderer: RendererDep, next: str = "/me"
) -> Response:
    target = safe_next(next, "/me")
    pending = portal.pending_login(svc, request.cookies.get(PENDING_COOKIE, ""))
    if pending is None:
        return RedirectResponse("/login" if identity is None else target, status_code=303)
    return renderer.render(request, "login_totp.html", name=pending.name, next=target)


@router.post("/login/totp", response_model=None)
def code(
    request: Request,
    identity: SessionDep,
    svc: ServicesDep,
    renderer: RendererDep,
    code: CodeField = "",
    next: NextField = "/me",
) -> Response:
    target = safe_next(next, "/me")
    gettext = renderer.gettext(request)
    token = request.cookies.get(PENDING_COOKIE, "")
    try:
        done = portal.finish_login(
            svc,
            token=token,
            code=code,
            source_address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
    except portal.LoginExpired as exc:
        response: HTMLResponse = renderer.render(
            request, "login.html", 401, error=translate(gettext, exc), name="", next=target
        )
        set_cookie(request, response, PENDING_COOKIE, "", max_age=0)
        return response
    except portal.Throttled as exc:
        pending = portal.pending_login(svc, token)
        response = renderer.render(
            request,
            "login_totp.html",
            429,
            error=translate(gettext, _throttled(exc)),
            name=pending.name if pending else "",
            next=target,
        )
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except portal.WrongCode as exc:
        pending = portal.pending_login(svc, token)
        if pending is None:  # that was the last try this pending log-in had
            expired = portal.LoginExpired(N_("too many wrong codes; enter your name and password again"))
            return renderer.render(
                request, "login.html", 401, error=translate(gettext, expired), name="", next=target
            )
        return renderer.render(
            request, "login_totp.html", 401, error=translate(gettext, exc), name=pending.name, next=target
        )
    if identity is not None:
        portal.end_session(svc, identity)  # one browser, one session
    new = done.login
    where = SETUP_PAGE if done.recovery_codes_left is not None else after_login(svc, new.identity, target)
    redirect = RedirectResponse(where, status_code=303)
    set_session_cookie(request, redirect, new.token)
    set_cookie(request, redirect, PENDING_COOKIE, "", max_age=0)
    forget_identity(request, new.identity)
    return redirect


# Setting it up on my account ---------------------------------------------------------------------------


def _page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    identity: Identity,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    status = portal.totp_status(svc, identity)
    setup = status.setup
    return renderer.render(
        request,
        "account_totp.html",
        status_code,
        totp=status,
        setup=setup,
        qr=_qr(setup.uri) if setup else None,
        due=identity.totp_due,
        next=safe_next(str(request.query_params.get("next", "")), "") or None,
        **extra,
    )


def _show(
    out: Outcome, request: Request, renderer: Renderer, svc: Services, identity: Identity
) -> HTMLResponse:
    """The set-up page with what the form came to (a throttled code says its wait in the reader's words)."""
    throttled = out.error if isinstance(out.error, portal.Throttled) else None
    if throttled is not None:
        out.fail(_throttled(throttled))
    response = out.show(functools.partial(_page, request, renderer, svc, identity))
    if throttled is not None:
        response.headers["Retry-After"] = str(throttled.retry_after)
    return response


@router.get("/account/totp")
def setup_page(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _page(request, renderer, svc, identity)


@router.post("/account/totp/setup")
def start_setup(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        portal.start_totp_setup(svc, identity)
    return _show(out, request, renderer, svc, identity)


@router.post("/account/totp/confirm")
def confirm(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep, code: CodeField = ""
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        codes = portal.confirm_totp(svc, identity, code=code, source_address=client_address(request))
        out.done(N_("Two-factor log-in is on."), recovery_codes=codes)
    if not out.failed and identity.totp_due:
        # The second factor the rule asked for is there: the admin is an admin again (this page too).
        identity = dataclasses.replace(identity, role=Role.ADMIN.value, totp_due=False)
        forget_identity(request, identity)
    return _show(out, request, renderer, svc, identity)


@router.post("/account/totp/recovery-codes")
def recovery_codes(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep, code: CodeField = ""
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        codes = portal.renew_recovery_codes(svc, identity, code=code, source_address=client_address(request))
        out.done(N_("New recovery codes were made; the old ones no longer work."), recovery_codes=codes)
    return _show(out, request, renderer, svc, identity)


@router.post("/account/totp/disable")
def disable(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep, code: CodeField = ""
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        portal.disable_totp(svc, identity, code=code, source_address=client_address(request))
        out.done(N_("Two-factor log-in is off."))
    return _show(out, request, renderer, svc, identity)
