"""The ONE exception handler: JSON under /api (and /healthz), an HTML page elsewhere, and for a WebSocket
handshake an HTTP refusal with the JSON body.

Every error becomes ``{"error": {"reason": ..., "message": ...}}`` with its status: the project's
:class:`~labgpu.errors.LabgpuError` (its status and reason), Starlette's HTTP errors (404, 405, ...) and
request validation errors (422, with a message naming each bad field). A page that needs a login redirects
to ``/login?next=...`` instead of showing 401. Anything else is a 500 whose details go to the log only.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketState

from labgpu.errors import N_, LabgpuError
from labgpu.services.portal import Throttled, TotpEnrolmentRequired
from labgpu.web.templating import Renderer, translate

log = logging.getLogger("labgpu.web")

_HTTP_REASONS = {
    400: ("bad-request", N_("The request is not valid.")),
    401: ("login-required", N_("Please log in.")),
    403: ("forbidden", N_("You may not do this.")),
    404: ("not-found", N_("There is no such page.")),
    405: ("method-not-allowed", N_("This address does not accept that method.")),
    413: ("too-large", N_("The request is too large.")),
    429: ("throttled", N_("Too many requests; try again later.")),
}

DEFAULT_TITLE = N_("Something went wrong")
# Titles of the HTML error page, by status.
TITLES = {
    400: N_("Not possible"),
    401: N_("Please log in"),
    403: N_("Not allowed"),
    404: N_("Not found"),
    409: N_("Not possible right now"),
    422: N_("Not possible"),
    429: N_("Too many attempts"),
    503: N_("Temporarily unavailable"),
}


def _is_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path in ("/api", "/healthz", "/openapi.json")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid request: " + "; ".join(parts)


def describe(exc: Exception) -> tuple[int, str, str, dict[str, str]]:
    """(status, reason, message, headers) for any exception."""
    if isinstance(exc, LabgpuError):
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Throttled) else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return exc.status, exc.reason, exc.message, headers
    if isinstance(exc, RequestValidationError):
        return 422, "invalid-request", _validation_message(exc), {}
    if isinstance(exc, StarletteHTTPException):
        reason, message = _HTTP_REASONS.get(exc.status_code, ("error", str(exc.detail)))
        detail = (
            exc.detail if isinstance(exc.detail, str) and exc.status_code not in _HTTP_REASONS else message
        )
        return exc.status_code, reason, detail, dict(exc.headers or {})
    return 500, "internal", N_("internal error; the server log has the details"), {}


async def deny_websocket(websocket: WebSocket, exc: Exception) -> None:
    """Refuse a WebSocket handshake with ``exc``'s status and the API's JSON error body (the WebSocket denial
    response; a server without it closes with 1008, which a browser sees as a failed handshake)."""
    status, reason, message, headers = describe(exc)
    if status >= 500:
        log.error(
            "WebSocket %s failed: %s",
            websocket.url.path,
            exc.log_message if isinstance(exc, LabgpuError) else repr(exc),
            exc_info=not isinstance(exc, LabgpuError),
        )
    if websocket.application_state != WebSocketState.CONNECTING:
        return  # accepted already: the route closes it with its own code
    body = {"error": {"reason": reason, "message": message}}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=status, headers=headers))
    else:
        await websocket.close(code=1008)


def install_error_handler(app: FastAPI, renderer: Renderer) -> None:
    async def handle(request: Request, exc: Exception) -> Response:
        if request.scope["type"] == "websocket":
            # Starlette hands the WebSocket and ignores what is returned (nothing is to be sent after this).
            await deny_websocket(request, exc)  # type: ignore[arg-type]
            return None  # type: ignore[return-value]
        status, reason, message, headers = describe(exc)
        if status >= 500:
            log.error(
                "%s %s failed: %s",
                request.method,
                request.url.path,
                exc.log_message if isinstance(exc, LabgpuError) else repr(exc),
                exc_info=not isinstance(exc, LabgpuError),
            )
        if _is_json(request):
            body: dict[str, Any] = {"error": {"reason": reason, "message": message}}
            return JSONResponse(body, status_code=status, headers=headers)
        if status == 401 or reason == TotpEnrolmentRequired.reason:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            # A page that needs a login goes to the login form; an admin page whose required second
            # factor is missing, to setting it up (web/routes/portal/totp.py).
            where = "/login" if status == 401 else "/account/totp"
            return RedirectResponse(f"{where}?next={quote(target, safe='/')}", status_code=303)
        gettext = renderer.gettext(request)
        response = await run_in_threadpool(
            renderer.render,
            request,
            "error.html",
            status,
            title=gettext(TITLES.get(status, DEFAULT_TITLE)),
            message=translate(gettext, exc if isinstance(exc, LabgpuError) else message),
            reason=reason,
        )
        response.headers.update(headers)
        return response

    for exc_type in (LabgpuError, StarletteHTTPException, RequestValidationError, Exception):
        app.add_exception_handler(exc_type, handle)
