"""Who is asking, and whether a state-changing request may go through.

Identity: under ``/api`` a request is authenticated by ``Authorization: Bearer lgp_...`` (a personal API
token; cookies are then ignored) or else by the session cookie; everywhere else by the session cookie only,
so a token cannot drive the cookie-based forms.

CSRF (:func:`csrf_protect`, the ONE place it is checked, installed as an app-wide dependency, which also
checks the Origin of every WebSocket handshake): every
POST/PUT/PATCH/DELETE must carry a token, in the ``csrf_token`` form field or the ``X-CSRF-Token`` header,
that is bound to the caller's login session (an HMAC of its id with the secret key). Requests with a bearer
token are exempt (no cookie, nothing ambient to abuse). A visitor who is not logged in (the login form)
gets a random pre-session cookie and a token bound to it, which stops login CSRF. An API request with no
credentials at all is let through to answer 401.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection

from labgpu.errors import N_, LabgpuError
from labgpu.services import portal
from labgpu.services.portal import Identity

SESSION_COOKIE = "labgpu_session"
ANON_COOKIE = "labgpu_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfFailed(LabgpuError):
    """A state-changing request without the right CSRF token."""

    status = 403
    reason = "csrf"


CSRF_MESSAGE = N_("the form has expired or did not come from this site; reload the page and try again")


def is_api(request: HTTPConnection) -> bool:
    return request.url.path.startswith("/api/")


def client_address(request: HTTPConnection) -> str | None:
    """The client's address (the proxy's X-Forwarded-For is applied by the middleware when trusted)."""
    return request.client.host if request.client else None


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def bearer_token(request: HTTPConnection) -> str | None:
    """The value of ``Authorization: Bearer ...``, "" for another scheme, None without the header."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def request_identity(request: HTTPConnection) -> Identity | None:
    """Who the request comes from (resolved once per request, then cached on it). Does database I/O."""
    cached = getattr(request.state, "identity", False)
    if cached is None or isinstance(cached, Identity):
        return cached
    services = request.app.state.services
    identity: Identity | None = None
    token = bearer_token(request) if is_api(request) else None
    if token is not None:
        identity = portal.resolve_token(services, token) if token else None
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            # An admin's session without a required second factor grants a member's rights only.
            identity = portal.with_second_factor_rule(services, portal.resolve_session(services, cookie))
    request.state.identity = identity
    return identity


def forget_identity(request: Request, identity: Identity | None = None) -> None:
    """After a login or logout within the request: what the rest of it (the page rendered) should see."""
    request.state.identity = identity


# CSRF ---------------------------------------------------------------------------------------------------


def _sign(request: Request, purpose: str, value: str) -> str:
    key = request.app.state.secret_key.encode()
    return hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _anon_value(request: Request) -> str:
    """The pre-session cookie's value: the one the browser sent, or a new one set on the response."""
    value = getattr(request.state, "anon_csrf", None) or request.cookies.get(ANON_COOKIE)
    if not value or len(value) > 128:
        value = secrets.token_urlsafe(32)
        request.state.anon_csrf = value
        request.state.set_anon_cookie = True
    return str(value)


def csrf_token(request: Request) -> str:
    """The token the page's forms must send back: bound to the login session, or to the pre-session cookie."""
    identity = request_identity(request)
    if identity is not None and identity.session_id is not None:
        return _sign(request, "session", identity.session_id)
    return _sign(request, "anon", _anon_value(request))


async def _given_token(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(FORM_TYPES):
        form = await request.form()  # Starlette keeps it: the route reads the same form
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


class BadOrigin(LabgpuError):
    """A WebSocket handshake from a page that is not the portal's own."""

    status = 403
    reason = "bad-origin"


def portal_origins(connection: HTTPConnection) -> set[str]:
    """The origins of the portal's own pages: the address this request came to, and portal_url's."""
    origins = set()
    host = connection.headers.get("host")
    if host:
        scheme = "https" if connection.url.scheme in ("wss", "https") else "http"
        origins.add(f"{scheme}://{host}".lower())
    configured = connection.app.state.settings.portal_url
    if configured:
        parts = urlsplit(str(configured))
        if parts.scheme and parts.netloc:
            origins.add(f"{parts.scheme}://{parts.netloc}".lower())
    return origins


def check_origin(connection: HTTPConnection) -> None:
    """Refuse a WebSocket handshake whose Origin is missing or not the portal's. A browser sends the
    member's cookies with a handshake that any page may start (cross-site WebSocket hijacking), and
    SameSite does not tell the ports of one host apart: a page on another port of the same host would
    otherwise open a terminal with a victim's cookies."""
    origin = (connection.headers.get("origin") or "").lower()
    if not origin or origin not in portal_origins(connection):
        raise BadOrigin(N_("this connection did not come from the portal's own pages"))


async def csrf_protect(request: HTTPConnection) -> None:
    """Refuse a state-changing request that lacks the CSRF token bound to its session (see the module),
    and every WebSocket handshake whose Origin is not the portal's (:func:`check_origin`)."""
    if request.scope["type"] == "websocket":
        check_origin(request)
        return
    assert isinstance(request, Request)
    if request.method in SAFE_METHODS:
        return
    if is_api(request) and bearer_token(request) is not None:
        return
    identity = await run_in_threadpool(request_identity, request)
    if identity is not None and identity.session_id is not None:
        expected = _sign(request, "session", identity.session_id)
    elif is_api(request) and SESSION_COOKIE not in request.cookies:
        return  # no credentials at all: the route answers 401 where it needs a login
    else:
        anon = request.cookies.get(ANON_COOKIE)
        expected = _sign(request, "anon", anon) if anon else ""
    given = await _given_token(request)
    if not expected or not given or not hmac.compare_digest(given, expected):
        raise CsrfFailed(CSRF_MESSAGE)


# Cookies ------------------------------------------------------------------------------------------------


def _cookie_options(request: Request) -> dict[str, Any]:
    settings = request.app.state.settings
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": bool(settings.secure_cookies or settings.web_tls == "proxy" or is_https(request)),
        "path": "/",
    }


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    settings = request.app.state.settings
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.session_max_hours * 3600, **_cookie_options(request)
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, **_cookie_options(request))


def set_pending_cookies(request: Request, response: Response) -> None:
    """Set the pre-session cookie when this request made one (a visitor's first form)."""
    if getattr(request.state, "set_anon_cookie", False):
        response.set_cookie(ANON_COOKIE, request.state.anon_csrf, **_cookie_options(request))
        request.state.set_anon_cookie = False


def set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, **_cookie_options(request))


def safe_next(target: str | None, default: str = "/") -> str:
    """A redirect target from user input, kept on this site (a path, never //host or a scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
