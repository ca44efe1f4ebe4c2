"""The terminal in the browser: a page (``/terminal/{name}``) with xterm.js, and its WebSocket
(``/terminal/{name}/ws``) that the portal bridges to the daemon's interactive exec in the member's container.

Who may: the member and admins (anyone else gets the 404 of a member that does not exist), checked on the
page and again on every WebSocket handshake. The handshake is refused unless its ``Origin`` is the portal's
own (a page of another origin, even on the same host, cannot borrow a member's cookies: SameSite does not
tell ports apart), it has a login session cookie (personal API tokens open no terminal) and the account is
under its limits. Refusals are HTTP answers to the handshake (the WebSocket denial response) with the same
JSON error body as the API's. An open terminal closes when it is idle, when its login session is logged
out (at once in this process; within ``terminal_recheck_seconds`` when it ended elsewhere) and when the
portal stops.
"""

from __future__ import annotations

import dataclasses
import logging
import re

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect, WebSocketState

from labgpu.errors import N_, BadInput, LabgpuError
from labgpu.services import members, portal
from labgpu.services.context import Actor, Services
from labgpu.services.portal import Identity, Unauthenticated
from labgpu.web.deps import RendererDep, ServicesDep, VisibleMember, check_member_access
from labgpu.web.security import SESSION_COOKIE, client_address, request_identity
from labgpu.web.terminals import terminals_of

router = APIRouter(include_in_schema=False)
_DIGITS = re.compile(r"[0-9]{1,4}")
log = logging.getLogger("labgpu.web.terminal")

# xterm.js styles its rows with <style> elements it makes at run time (no nonce support), so this page alone
# allows inline styles; scripts stay 'self' only, and the page shows no text of anyone's but the member name.
TERMINAL_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


@router.get("/terminal/{name}")
def terminal_page(
    request: Request, name: VisibleMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    info = members.get_member(svc, name, live=True)
    response = renderer.render(
        request,
        "terminal.html",
        member=info,
        ready=bool(info.container) and info.status == "Running",
        ws_path=f"/terminal/{name}/ws",
    )
    response.headers["Content-Security-Policy"] = TERMINAL_CSP
    return response


# The WebSocket ------------------------------------------------------------------------------------------


def _size(connection: HTTPConnection, key: str, default: int) -> int:
    raw = connection.query_params.get(key)
    if raw is None:
        return default
    # ASCII digits only: str.isdigit() and int() also take other scripts' digits.
    if not _DIGITS.fullmatch(raw) or not 1 <= int(raw) <= 1000:
        raise BadInput(N_("the terminal size is not valid"))
    return int(raw)


class _Browser:
    """The browser's WebSocket, as the terminal pump wants it."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def receive(self) -> bytes | str | None:
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("bytes") is not None:
            return bytes(message["bytes"])
        text = message.get("text")
        return str(text) if text is not None else b""

    async def send(self, data: bytes) -> None:
        try:
            await self._ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError) as exc:
            raise ConnectionError("the browser has gone") from exc

    async def close(self, code: int, reason: str) -> None:
        if self._ws.application_state == WebSocketState.CONNECTED:
            await self._ws.close(code=code, reason=reason)


def _services(websocket: WebSocket, identity: Identity) -> Services:
    base: Services = websocket.app.state.services
    actor = Actor(name=identity.name, source_address=client_address(websocket), is_admin=identity.is_admin)
    return dataclasses.replace(base, actor=actor)


@router.websocket("/terminal/{name}/ws")
async def terminal_socket(websocket: WebSocket, name: str) -> None:
    # Refusals raise: the app's error handler answers the handshake (deny_websocket). The Origin was checked
    # before this runs (web/security.py: csrf_protect, for every WebSocket).
    settings = websocket.app.state.settings
    registry = terminals_of(websocket)
    cols, rows = _size(websocket, "cols", 80), _size(websocket, "rows", 24)
    identity = await run_in_threadpool(request_identity, websocket)
    if identity is None or identity.session_id is None:
        raise Unauthenticated(N_("log in first"))
    check_member_access(identity, name)
    live = registry.admit(identity.name, name, identity.session_id)
    cookie = websocket.cookies.get(SESSION_COOKIE, "")
    try:
        svc = _services(websocket, identity)
        opened = await run_in_threadpool(members.open_terminal, svc, name, cols=cols, rows=rows)
        stream = await members.connect_terminal(opened)
        await websocket.accept()

        async def still_allowed(active: bool) -> bool:
            def check() -> bool:
                now = portal.resolve_session(svc, cookie, touch=active)
                if now is None or now.session_id != identity.session_id:
                    return False
                try:
                    check_member_access(now, name)
                except LabgpuError:
                    return False
                return True

            try:
                return await run_in_threadpool(check)
            except LabgpuError:
                return True  # the store is briefly unreachable: keep the terminal, ask again later

        code = await members.run_terminal(
            live,
            stream,
            _Browser(websocket),
            idle_seconds=settings.terminal_idle_minutes * 60,
            recheck_seconds=settings.terminal_recheck_seconds,
            still_allowed=still_allowed,
        )
        log.info(
            "terminal of %s opened by %s closed: %s",
            name,
            identity.name,
            members.CLOSE_REASONS.get(code, code),
        )
    finally:
        registry.release(live)
