"""The apps origin: a second listener of `labgpu serve` (apps_port, or apps_url behind a proxy) that reverse-
proxies ``/m/MEMBER/APP/...`` to the app in MEMBER's container, HTTP and WebSocket, streamed both ways, over a
unix socket: the proxy device's for a container on this host, the portal's own relay (services/apps/_relay.py,
each connection an exec through the daemon) for a container on another host.

Why another origin: an app's pages run whatever the member (or a notebook they opened) put there. On the
portal's origin that script could read the portal's pages and call its API as whoever looks at the app (an
admin, say). On another origin the browser's same-origin policy keeps it out: it cannot read the portal's
answers, its CSRF tokens or its HttpOnly cookies, and every portal WebSocket checks Origin.

Every request and every WebSocket handshake here is checked: the app cookie (path-scoped to the one app,
signed, bound to a portal login that must still be valid; see services/apps/_grants.py), the member or an
admin, a rate limit; a WebSocket's Origin must be this origin. The portal's own cookies are removed from what
reaches the app, and the app cannot set cookies with labgpu's names. Paths are passed on as they came, under
the app's own prefix only: ``..`` segments, encoded slashes and anything outside ``/m/MEMBER/APP/`` are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from labgpu.services import apps, portal
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.settings import Settings

log = logging.getLogger("labgpu.web.apps")

APP_COOKIE = "labgpu_app"
PATH_RE = re.compile(r"^/m/([a-z][a-z0-9_-]{0,63})/([a-z][a-z0-9-]{0,30}[a-z0-9])(/.*)?\Z")
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "cookie",
        "content-length",
    }
)
# A request's Content-Length goes along (a streamed body is otherwise sent chunked, which not every app takes).
REQUEST_SKIP = HOP_HEADERS - {"content-length"}
WS_SKIP_HEADERS = HOP_HEADERS | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "origin",
}
SESSION_CHECK_SECONDS = 5.0
# Connections to an app in a container on another host: each new one is an exec through its daemon (tens of
# milliseconds), so idle ones are kept for a while and reused; a browser opens about six at once.
RELAY_LIMITS = httpx.Limits(max_connections=32, max_keepalive_connections=16, keepalive_expiry=120)
TARGET_SECONDS = 30.0
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class _Cached:
    value: Any
    at: float


class AppsProxy:
    """The state of the apps origin: settings, services, tickets, caches and limits."""

    def __init__(self, settings: Settings, services: Services, secret: str) -> None:
        self.settings = settings
        self.svc = services
        self.tickets = apps.Tickets(secret)
        self.limiter = apps.RateLimiter(settings.apps_requests_per_minute)
        self._sessions: dict[str, _Cached] = {}
        self._targets: dict[tuple[str, str], _Cached] = {}
        self._clients: dict[str, httpx.AsyncClient] = {}
        self.relays = apps.AppRelays()

    # Who ------------------------------------------------------------------------------------------------

    def _identity(self, session_id: str) -> Identity | None:
        now = time.monotonic()
        cached = self._sessions.get(session_id)
        if cached is not None and now - cached.at < SESSION_CHECK_SECONDS:
            return cached.value  # type: ignore[no-any-return]
        identity = portal.resolve_session_id(self.svc, session_id) if session_id else None
        self._sessions[session_id] = _Cached(identity, now)
        if len(self._sessions) > 5000:
            self._sessions = {k: v for k, v in self._sessions.items() if now - v.at < SESSION_CHECK_SECONDS}
        return identity

    async def allowed_grant(self, grant: apps.Grant) -> bool:
        """Whether the login ``grant`` came from is still valid and may (still) see the grant's member."""
        identity = await asyncio.to_thread(self._identity, grant.session_id)
        return (
            identity is not None
            and identity.name == grant.account
            and (identity.is_admin or identity.name == grant.member)
        )

    async def allowed(self, cookies: dict[str, str], member: str, app: str) -> apps.Grant | None:
        """The grant of a request for ``member``'s ``app``, or None: no or a bad cookie, another app's, a login
        that ended, an account that may not (any longer) see that member."""
        grant = self.tickets.read_cookie(cookies.get(APP_COOKIE, ""))
        if grant is None or not grant.allows(member, app):
            return None
        return grant if await self.allowed_grant(grant) else None

    async def target(self, member: str, app: str) -> apps.AppTarget:
        now = time.monotonic()
        cached = self._targets.get((member, app))
        if cached is not None and now - cached.at < TARGET_SECONDS:
            return cached.value  # type: ignore[no-any-return]
        target = await asyncio.to_thread(apps.app_target, self.svc, member, app)
        if target.relay is not None:  # a container on another host: the portal's own socket, relayed
            await self.relays.ensure(target.socket, target.relay)
        self._targets[(member, app)] = _Cached(target, now)
        return target

    def client(self, target: apps.AppTarget) -> httpx.AsyncClient:
        socket = str(target.socket)
        client = self._clients.get(socket)
        if client is None:
            # A relayed connection costs an exec on the daemon: keep idle ones longer (an app's page polls).
            limits = RELAY_LIMITS if target.relay is not None else httpx.Limits()
            transport = httpx.AsyncHTTPTransport(uds=socket, limits=limits)
            client = httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(60, read=None))
            self._clients[socket] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        await self.relays.close()


def _parse(path: str) -> tuple[str, str, str] | None:
    """(member, app, rest) of a proxied path, or None for anything else (``..``, encoded slashes, ...)."""
    match = PATH_RE.match(path)
    if match is None:
        return None
    rest = match.group(3) or "/"
    segments = rest.split("/")
    if any(s in ("..", ".") for s in segments) or "\\" in rest or "\x00" in rest:
        return None
    return match.group(1), match.group(2), rest


def _raw_path(scope: Any) -> str:
    raw = scope.get("raw_path") or scope["path"].encode()
    return bytes(raw).decode("latin-1")


def _upstream_path(target: apps.AppTarget, raw: str) -> str | None:
    """The path the app is asked for: the one the browser sent (prefix apps) or without the prefix (strip)."""
    lowered = raw.lower()
    if "%2f" in lowered or "%5c" in lowered or "%2e" in lowered or "%00" in lowered:
        return None
    if target.app.base_path == "prefix":
        return raw
    prefix = target.base_url.rstrip("/")
    return raw[len(prefix) :] or "/"


def _cookie_header(cookies: dict[str, str]) -> str | None:
    """The browser's cookies minus labgpu's own (the portal's login and CSRF cookies, the app cookie)."""
    kept = [f"{k}={v}" for k, v in cookies.items() if not k.lower().startswith("labgpu")]
    return "; ".join(kept) or None


def _forward_headers(headers: Any, cookies: dict[str, str], skip: frozenset[str]) -> list[tuple[str, str]]:
    out = [(k, v) for k, v in headers.items() if k.lower() not in skip]
    out = [(k, v) for k, v in out if not (k.lower() == "authorization" and "lgp_" in v)]
    cookie = _cookie_header(cookies)
    if cookie:
        out.append(("cookie", cookie))
    return out


def _response_headers(headers: httpx.Headers) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in headers.multi_items():
        lowered = key.lower()
        if lowered in HOP_HEADERS - {"content-length"}:
            continue
        if lowered == "set-cookie" and value.strip().lower().startswith("labgpu"):
            continue  # an app may not set (or overwrite) labgpu's cookies on this host
        out.append((lowered.encode("latin-1"), value.encode("latin-1")))
    return out


def _not_found() -> Response:
    return PlainTextResponse("not found", status_code=404, headers=PAGE_HEADERS)


def _denied(request: Request) -> Response:
    """403: no (valid) app cookie. The page says where to open the app from, in English and Chinese."""
    portal_url = html.escape(request.app.state.portal_url)
    link = f'<a href="{portal_url}/me">{portal_url}</a>' if portal_url else "the portal"
    body = (
        "<!doctype html><meta charset=utf-8><title>labgpu</title>"
        f"<p>Open this app from {link}.</p><p>请从门户打开此应用。</p>"
    )
    headers = {**PAGE_HEADERS, "Content-Security-Policy": "default-src 'none'"}
    return HTMLResponse(body, status_code=403, headers=headers)


async def enter(request: Request) -> Response:
    """Trade a one-time ticket for the app cookie, then go to the app."""
    proxy: AppsProxy = request.app.state.proxy
    grant = proxy.tickets.redeem(request.query_params.get("ticket", ""))
    if grant is None:
        return _denied(request)
    if not await proxy.allowed_grant(grant):
        return _denied(request)
    seconds = proxy.settings.session_max_hours * 3600
    value = proxy.tickets.cookie(grant, seconds=seconds)
    base = f"/m/{grant.member}/{grant.app}/"
    response = RedirectResponse(base, 303, headers=PAGE_HEADERS)
    response.set_cookie(
        APP_COOKIE,
        value,
        max_age=seconds,
        path=base,
        httponly=True,
        samesite="lax",
        secure=bool(proxy.settings.secure_cookies or request.url.scheme == "https"),
    )
    return response


async def proxy_http(request: Request) -> Response:
    proxy: AppsProxy = request.app.state.proxy
    parsed = _parse(request.url.path)
    if parsed is None:
        return _not_found()
    member, app, _ = parsed
    grant = await proxy.allowed(dict(request.cookies), member, app)
    if grant is None:
        return _denied(request)
    if not proxy.limiter.allow(f"{grant.session_id}:{member}:{app}"):
        return PlainTextResponse("too many requests", status_code=429, headers={"Retry-After": "60"})
    try:
        target = await proxy.target(member, app)
    except Exception:
        return _not_found()
    path = _upstream_path(target, _raw_path(request.scope))
    if path is None:
        return _not_found()
    query = request.url.query
    url = "http://app" + path + (f"?{query}" if query else "")
    headers = _forward_headers(request.headers, dict(request.cookies), REQUEST_SKIP)
    headers.append(("host", request.headers.get("host", "app")))
    has_body = request.method not in ("GET", "HEAD", "OPTIONS")
    client = proxy.client(target)
    upstream = client.build_request(
        request.method, url, headers=headers, content=request.stream() if has_body else None
    )
    try:
        response = await client.send(upstream, stream=True)
    except (httpx.TransportError, OSError):
        page = (
            "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=2><title>labgpu</title>"
            "<p>The app is starting (or not running): this page tries again in a moment. "
            "应用正在启动（或未运行），稍后自动重试。</p>"
        )
        return HTMLResponse(page, status_code=502, headers=PAGE_HEADERS)
    out = StreamingResponse(
        response.aiter_raw(), status_code=response.status_code, background=BackgroundTask(response.aclose)
    )
    out.raw_headers = _response_headers(response.headers)
    return out


def _same_origin(websocket: WebSocket) -> bool:
    """A WebSocket's Origin must be this origin (the Host it was sent to): a page of any other origin, the
    portal's included, cannot open an app's WebSocket with the member's cookies."""
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


async def proxy_ws(websocket: WebSocket) -> None:
    from websockets.asyncio.client import unix_connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

    proxy: AppsProxy = websocket.app.state.proxy
    parsed = _parse(websocket.url.path)
    if parsed is None or not _same_origin(websocket):
        await websocket.close(code=1008)
        return
    member, app, _ = parsed
    grant = await proxy.allowed(dict(websocket.cookies), member, app)
    if grant is None or not proxy.limiter.allow(f"{grant.session_id}:{member}:{app}"):
        await websocket.close(code=1008)
        return
    try:
        target = await proxy.target(member, app)
    except Exception:
        await websocket.close(code=1008)
        return
    path = _upstream_path(target, _raw_path(websocket.scope))
    if path is None:
        await websocket.close(code=1008)
        return
    query = websocket.url.query
    host = websocket.headers.get("host", "app")
    protocols = [
        p.strip() for p in websocket.headers.get("sec-websocket-protocol", "").split(",") if p.strip()
    ]
    headers = _forward_headers(websocket.headers, dict(websocket.cookies), WS_SKIP_HEADERS)
    try:
        upstream = await unix_connect(
            str(target.socket),
            uri=f"ws://{host}{path}" + (f"?{query}" if query else ""),
            additional_headers=headers,
            origin=websocket.headers.get("origin"),
            subprotocols=protocols or None,
            max_size=None,
            compression=None,
            open_timeout=30,
            ping_interval=None,
        )
    except (TimeoutError, OSError, InvalidHandshake, InvalidStatus):
        await websocket.close(code=1011)
        return
    await websocket.accept(subprotocol=upstream.subprotocol)

    async def browser_to_app() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await upstream.send(message["bytes"])
            elif message.get("text") is not None:
                await upstream.send(message["text"])

    async def app_to_browser() -> None:
        async for data in upstream:
            if isinstance(data, bytes):
                await websocket.send_bytes(data)
            else:
                await websocket.send_text(data)

    tasks = [asyncio.create_task(browser_to_app()), asyncio.create_task(app_to_browser())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(
                asyncio.CancelledError, ConnectionClosed, WebSocketDisconnect, RuntimeError
            ):
                await task
        await upstream.close()
        with contextlib.suppress(RuntimeError):
            await websocket.close()


async def index(request: Request) -> Response:
    return _denied(request)


def create_apps_app(settings: Settings, services: Services) -> Starlette:
    """The apps origin's ASGI app (served by `labgpu serve` on apps_port). Shares the portal's services."""
    proxy = AppsProxy(settings, services, settings.session_secret())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.close()

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/_labgpu/enter", enter),
            Route(
                "/m/{rest:path}",
                proxy_http,
                methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            ),
            WebSocketRoute("/m/{rest:path}", proxy_ws),
        ],
        lifespan=lifespan,
    )
    app.state.proxy = proxy
    app.state.portal_url = (settings.portal_url or "").rstrip("/")
    return app
