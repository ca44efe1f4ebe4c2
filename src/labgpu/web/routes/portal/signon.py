"""Pages: signing on through OIDC providers and the campus CAS, and what follows a first sign-on (the
prefilled application, linking an existing account).

The browser keeps what a sign-on needs between requests in short-lived cookies signed with the secret
key (HMAC, bound to their purpose): the OIDC flow (state, nonce, PKCE verifier) or the CAS state while it
is away at the provider, and the claims of someone who signed on without an account while they fill in
the application. Nothing in them is secret from the browser; nothing in them can be changed by it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from labgpu.errors import N_, LabgpuError, NotFound
from labgpu.services import portal
from labgpu.services.context import Services
from labgpu.web.deps import RendererDep, ServicesDep, SessionDep
from labgpu.web.outcome import Outcome
from labgpu.web.routes.portal import totp
from labgpu.web.security import client_address, forget_identity, safe_next, set_cookie, set_session_cookie
from labgpu.web.templating import Renderer, translate

router = APIRouter(include_in_schema=False)

FLOW_COOKIE = "labgpu_signon_flow"
CLAIMS_COOKIE = "labgpu_signon"
FLOW_SECONDS = 600  # time to log in at the provider
CLAIMS_SECONDS = 1800  # time to fill in the application
NOT_SET_UP = N_("the campus log-in is not set up here")
NameField = Annotated[str, Form(max_length=64)]
PasswordField = Annotated[str, Form(max_length=1024)]
ShortField = Annotated[str, Form(max_length=254)]


# Signed cookies -----------------------------------------------------------------------------------------


def _mac(request: Request, purpose: str, body: str) -> str:
    key = request.app.state.secret_key.encode()
    return hmac.new(key, f"signon:{purpose}:{body}".encode(), hashlib.sha256).hexdigest()


def seal(request: Request, purpose: str, data: dict[str, Any], seconds: int) -> str:
    body = base64.urlsafe_b64encode(json.dumps({**data, "exp": int(time.time()) + seconds}).encode()).decode()
    return f"{body}.{_mac(request, purpose, body)}"


def unseal(request: Request, purpose: str, cookie: str) -> dict[str, Any] | None:
    """The data of a cookie sealed for ``purpose``; None when missing, changed or expired."""
    cookie = request.cookies.get(cookie, "")
    body, _, mac = cookie.partition(".")
    if not body or len(cookie) > 3800 or not hmac.compare_digest(mac, _mac(request, purpose, body)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(body.encode()))
    except ValueError:
        return None
    if not isinstance(data, dict) or int(data.get("exp", 0)) < time.time():
        return None
    return data


def _claims_data(claims: portal.Claims, admin: bool) -> dict[str, Any]:
    return {
        "provider": claims.provider,
        "subject": claims.subject,
        "name": claims.name,
        "email": claims.email,
        "display_name": claims.display_name,
        "groups": sorted(claims.groups),
        "admin": admin,
    }


def _pending(request: Request) -> tuple[portal.Claims, bool] | None:
    data = unseal(request, "claims", CLAIMS_COOKIE)
    if data is None:
        return None
    claims = portal.Claims(
        provider=str(data["provider"]),
        subject=str(data["subject"]),
        name=str(data["name"]),
        email=data.get("email"),
        display_name=data.get("display_name"),
        groups=frozenset(str(g) for g in data.get("groups", [])),
    )
    return claims, bool(data.get("admin"))


# Where a sign-on lands -----------------------------------------------------------------------------------


def _base(request: Request) -> str:
    configured = request.app.state.settings.portal_url
    return (configured or str(request.base_url)).rstrip("/")


def _proof(request: Request, method: str) -> portal.Proof:
    return portal.Proof(method, client_address(request), request.headers.get("user-agent"))


def land(
    request: Request,
    renderer: Renderer,
    svc: Services,
    identity: portal.Identity | None,
    result: portal.NewLogin | portal.SecondStep | portal.Unlinked | portal.Waiting,
    target: str = "/me",
) -> Response:
    """Where a successful sign-on (any backend) takes the browser: logged in, to the prefilled
    application, to the code step of a two-factor log-in, or to the page that says their application is
    waiting."""
    if isinstance(result, portal.SecondStep):  # two-factor log-in: the code comes next, then the session
        return totp.ask_for_code(request, result, target)
    if isinstance(result, portal.Unlinked):
        response: Response = RedirectResponse("/signon/apply", status_code=303)
        value = seal(request, "claims", _claims_data(result.claims, result.admin), CLAIMS_SECONDS)
        set_cookie(request, response, CLAIMS_COOKIE, value, max_age=CLAIMS_SECONDS)
        return response
    if isinstance(result, portal.Waiting):
        if result.application.status == "approved":  # by a group rule; provisioning resumes if it stopped
            request.app.state.worker.enqueue(result.application.id)
        return renderer.render(request, "signon_waiting.html", application=result.application)
    if identity is not None:
        portal.end_session(svc, identity)  # one browser, one session
    response = RedirectResponse(
        totp.after_login(svc, result.identity, safe_next(target, "/me")), status_code=303
    )
    set_session_cookie(request, response, result.token)
    forget_identity(request, result.identity)
    response.delete_cookie(CLAIMS_COOKIE, path="/")
    return response


def _refused(request: Request, renderer: Renderer, error: LabgpuError) -> HTMLResponse:
    gettext = renderer.gettext(request)
    response = renderer.render(
        request, "login.html", error.status, error=translate(gettext, error), name="", next="/me"
    )
    if isinstance(error, portal.Throttled):
        response.headers["Retry-After"] = str(error.retry_after)
    return response


# OIDC -----------------------------------------------------------------------------------------------------


@router.get("/login/oidc/{provider}", response_model=None)
def oidc_start(
    request: Request, provider: str, svc: ServicesDep, renderer: RendererDep, next: str = "/me"
) -> Response:
    redirect_uri = f"{_base(request)}/login/oidc/{provider}/callback"
    try:
        portal.check_signon_throttle(svc, f"oidc:{provider[:32]}", client_address(request))
        url, flow = portal.oidc_begin(svc.settings, provider, redirect_uri)
    except LabgpuError as exc:
        return _refused(request, renderer, exc)
    response = RedirectResponse(url, status_code=303)
    data = {
        "provider": flow.provider,
        "state": flow.state,
        "nonce": flow.nonce,
        "verifier": flow.code_verifier,
    }
    data["next"] = safe_next(next[:512], "/me")
    set_cookie(
        request, response, FLOW_COOKIE, seal(request, "oidc", data, FLOW_SECONDS), max_age=FLOW_SECONDS
    )
    return response


@router.get("/login/oidc/{provider}/callback", response_model=None)
def oidc_callback(
    request: Request,
    provider: str,
    identity: SessionDep,
    svc: ServicesDep,
    renderer: RendererDep,
    state: str = "",
    code: str = "",
    error: str = "",
) -> Response:
    redirect_uri = f"{_base(request)}/login/oidc/{provider}/callback"
    data = unseal(request, "oidc", FLOW_COOKIE)
    method = f"oidc:{provider[:32]}"
    try:
        portal.oidc_provider(svc.settings, provider)  # NotFound for a provider that is not configured
        portal.check_signon_throttle(svc, method, client_address(request))
        if data is None or data.get("provider") != provider:
            raise portal.SignOnFailed(N_("the sign-on took too long or was started elsewhere; log in again"))
        flow = portal.OidcFlow(provider, str(data["state"]), str(data["nonce"]), str(data["verifier"]))
        claims = portal.oidc_finish(
            svc.settings,
            flow,
            state=state[:512],
            code=code[:2048],
            error=error[:128],
            redirect_uri=redirect_uri,
        )
        result = portal.signon_login(svc, claims, _proof(request, method))
    except portal.SignOnFailed as exc:
        portal.record_signon_failure(svc, method, client_address(request), exc)
        refused = _refused(request, renderer, exc)
        refused.delete_cookie(FLOW_COOKIE, path="/")
        return refused
    except LabgpuError as exc:
        return _refused(request, renderer, exc)
    response = land(request, renderer, svc, identity, result, str(data.get("next", "/me")))
    response.delete_cookie(FLOW_COOKIE, path="/")
    return response


# CAS ------------------------------------------------------------------------------------------------------


def _cas_service(request: Request, state: str) -> str:
    return f"{_base(request)}/login/cas/callback?{urlencode({'state': state})}"


@router.get("/login/cas", response_model=None)
def cas_start(request: Request, svc: ServicesDep, renderer: RendererDep, next: str = "/me") -> Response:
    if not portal.cas_enabled(svc.settings):
        return _refused(request, renderer, NotFound(NOT_SET_UP))
    state = secrets.token_urlsafe(32)
    response = RedirectResponse(
        portal.cas_login_url(svc.settings, _cas_service(request, state)), status_code=303
    )
    data = {"state": state, "next": safe_next(next[:512], "/me")}
    set_cookie(request, response, FLOW_COOKIE, seal(request, "cas", data, FLOW_SECONDS), max_age=FLOW_SECONDS)
    return response


@router.get("/login/cas/callback", response_model=None)
def cas_callback(
    request: Request,
    identity: SessionDep,
    svc: ServicesDep,
    renderer: RendererDep,
    state: str = "",
    ticket: str = "",
) -> Response:
    data = unseal(request, "cas", FLOW_COOKIE)
    try:
        portal.check_signon_throttle(svc, "cas", client_address(request))
        if not portal.cas_enabled(svc.settings):
            raise NotFound(NOT_SET_UP)
        if data is None or not state or not hmac.compare_digest(str(data.get("state", "")), state[:128]):
            raise portal.SignOnFailed(N_("the sign-on took too long or was started elsewhere; log in again"))
        claims = portal.cas_validate(svc.settings, ticket=ticket[:512], service=_cas_service(request, state))
        result = portal.signon_login(svc, claims, _proof(request, "cas"))
    except portal.SignOnFailed as exc:
        portal.record_signon_failure(svc, "cas", client_address(request), exc)
        refused = _refused(request, renderer, exc)
        refused.delete_cookie(FLOW_COOKIE, path="/")
        return refused
    except LabgpuError as exc:
        return _refused(request, renderer, exc)
    response = land(request, renderer, svc, identity, result, str(data.get("next", "/me")) if data else "/me")
    response.delete_cookie(FLOW_COOKIE, path="/")
    return response


# After a first sign-on ------------------------------------------------------------------------------------


def _form(claims: portal.Claims) -> dict[str, str]:
    return {
        "name": portal.suggest_name(claims),
        "email": claims.email or "",
        "supervisor": "",
        "group_name": "",
        "reason": "",
    }


def _apply_page(
    request: Request, renderer: Renderer, svc: Services, claims: portal.Claims, admin: bool
) -> Callable[..., HTMLResponse]:
    def page(status: int, **shown: Any) -> HTMLResponse:
        return renderer.render(
            request,
            "signon_apply.html",
            status,
            claims=claims,
            admin=admin,
            open=svc.settings.applications_open or admin,
            **shown,
        )

    return page


@router.get("/signon/apply", response_model=None)
def signon_apply_form(
    request: Request, identity: SessionDep, svc: ServicesDep, renderer: RendererDep
) -> Response:
    if identity is not None:
        return RedirectResponse("/me", status_code=303)
    pending = _pending(request)
    if pending is None:
        return RedirectResponse("/login", status_code=303)
    claims, admin = pending
    form = _form(claims)
    gettext = renderer.gettext(request)
    # Say at once when the proposed name will not do, and what to do instead.
    problem = portal.name_problem(svc, claims.name, proposed=form["name"])
    note = translate(gettext, problem) if problem is not None else None
    return _apply_page(request, renderer, svc, claims, admin)(200, form=form, name_error=note, link_name="")


@router.post("/signon/apply", response_model=None)
def signon_apply(
    request: Request,
    background: BackgroundTasks,
    identity: SessionDep,
    svc: ServicesDep,
    renderer: RendererDep,
    name: NameField = "",
    email: ShortField = "",
    supervisor: Annotated[str, Form(max_length=128)] = "",
    group_name: Annotated[str, Form(max_length=128)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    pending = _pending(request)
    if pending is None:
        return RedirectResponse("/login", status_code=303)
    claims, admin = pending
    form = {
        "name": name,
        "email": email,
        "supervisor": supervisor,
        "group_name": group_name,
        "reason": reason,
    }
    result: portal.ApplicationInfo | portal.NewLogin | portal.SecondStep | None = None
    with Outcome(request, renderer) as out:
        result = portal.apply_with_identity(
            svc,
            claims,
            name=name,
            email=email,
            supervisor=supervisor,
            group_name=group_name,
            reason=reason,
            proof=_proof(request, claims.provider),
        )
    if out.failed or result is None:
        return out.show(_apply_page(request, renderer, svc, claims, admin), form=form, link_name="")
    if isinstance(result, portal.ApplicationInfo):
        if result.status == "approved":
            request.app.state.worker.enqueue(result.id)
        else:
            background.add_task(portal.notify_admins, svc, result)
        response: Response = renderer.render(
            request, "signon_waiting.html", application=result, submitted=True
        )
        response.delete_cookie(CLAIMS_COOKIE, path="/")
        return response
    return land(request, renderer, svc, identity, result)


@router.post("/signon/link", response_model=None)
def signon_link(
    request: Request,
    identity: SessionDep,
    svc: ServicesDep,
    renderer: RendererDep,
    name: NameField = "",
    password: PasswordField = "",
) -> Response:
    pending = _pending(request)
    if pending is None:
        return RedirectResponse("/login", status_code=303)
    claims, admin = pending
    result: portal.NewLogin | portal.SecondStep | None = None
    with Outcome(request, renderer, error_field="link_error") as out:
        result = portal.link_with_password(
            svc, claims, name=name, password=password, proof=_proof(request, claims.provider)
        )
    if out.failed or result is None:
        response = out.show(
            _apply_page(request, renderer, svc, claims, admin), form=_form(claims), link_name=name
        )
        if isinstance(out.error, portal.Throttled):
            response.headers["Retry-After"] = str(out.error.retry_after)
        return response
    return land(request, renderer, svc, identity, result)
