"""The apps origin's proxy against a real app server (uvicorn on a unix socket, standing where a container's
proxy device puts the app), no daemon needed: tickets become app cookies once, every request and WebSocket
handshake is checked (cookie, login, Origin), labgpu's cookies never reach the app, an app cannot set them, big
answers and uploads stream through, and logging out ends the app's access. The same rules against a real
JupyterLab in a container: tests/browser/test_jupyter_apps.py."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from labgpu.domain import apps as rules
from labgpu.services.apps import AppTarget
from labgpu.services.portal._logins import token_digest
from labgpu.web.routes.apps import origin
from labgpu.web.security import SESSION_COOKIE
from tests.web.conftest import Portal, login, page_token

APPS = "http://127.0.0.1:8001"
BASE = "/m/alice/jupyterlab"
BIG = 64 * 1024 * 1024
WS_ORIGIN = "http://testserver"  # the test client's WebSockets go to Host: testserver, whatever the base URL


async def _echo(request: Request) -> Response:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    answer = JSONResponse(
        {
            "cookie": request.headers.get("cookie"),
            "path": request.url.path,
            "size": size,
            "host": request.headers["host"],
        }
    )
    answer.set_cookie("labgpu_session", "evil", path="/")
    answer.set_cookie("_xsrf", "jupyters-own", path=BASE + "/")
    return answer


async def _big(_: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        block = b"x" * (1 << 20)
        for _ in range(BIG // len(block)):
            yield block

    return StreamingResponse(chunks())


async def _ws(websocket: WebSocket) -> None:
    await websocket.accept()
    while True:
        text = await websocket.receive_text()
        await websocket.send_text("echo:" + text + ":" + str(websocket.headers.get("cookie")))


@pytest.fixture
def app_server(tmp_path: Path) -> Iterator[Path]:
    """A real HTTP/WebSocket server on a unix socket (what a container's app is, seen from the host)."""
    sock = tmp_path / "app.sock"
    routes = [
        Route(BASE + "/echo", _echo, methods=["GET", "POST", "PUT"]),
        Route(BASE + "/big", _big),
        WebSocketRoute(BASE + "/ws", _ws),
    ]
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=routes), uds=str(sock), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the app server did not start"
        time.sleep(0.05)
    yield sock
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def apps_client(portal: Portal, app_server: Path) -> Iterator[tuple[TestClient, origin.AppsProxy]]:
    apps_app = origin.create_apps_app(portal.settings, portal.app.state.services)
    proxy: origin.AppsProxy = apps_app.state.proxy
    target = AppTarget("alice", rules.BUILTIN_APPS["jupyterlab"], app_server)
    proxy._targets[("alice", "jupyterlab")] = origin._Cached(target, time.monotonic() + 10**9)
    with TestClient(apps_app, base_url=APPS) as client:
        yield client, proxy


def _cookies(client: TestClient) -> str:
    """The Cookie header a browser sends to the app's path (the test client does not send its jar on
    WebSockets)."""
    return "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)


def _enter(portal: Portal, apps: TestClient, proxy: origin.AppsProxy, who: str = "alice") -> TestClient:
    """Log ``who`` in on the portal and trade a ticket for the app cookie, as the open button does."""
    client = portal.client()
    assert login(client, who).status_code == 303
    session = token_digest(client.cookies[SESSION_COOKIE])
    ticket = proxy.tickets.issue(
        account=who, is_admin=who == "boss", session_id=session, member="alice", app="jupyterlab"
    )
    entered = apps.get("/_labgpu/enter", params={"ticket": ticket}, follow_redirects=False)
    assert entered.status_code == 303 and entered.headers["location"] == BASE + "/"
    assert "path=/m/alice/jupyterlab/" in entered.headers["set-cookie"].lower()
    assert "httponly" in entered.headers["set-cookie"].lower()
    assert apps.get("/_labgpu/enter", params={"ticket": ticket}).status_code == 403  # once
    apps.cookies.set(SESSION_COOKIE, client.cookies[SESSION_COOKIE])  # cookies ignore ports: it comes along
    return client


def test_the_member_gets_through_streamed_and_labgpus_cookies_stay_out(
    portal: Portal, apps_client: tuple[TestClient, origin.AppsProxy]
) -> None:
    apps, proxy = apps_client
    portal.add_account("alice")
    assert apps.get(BASE + "/echo").status_code == 403  # no app cookie yet
    _enter(portal, apps, proxy)
    apps.cookies.set("_xsrf", "mine")
    seen = apps.post(BASE + "/echo", content=b"y" * 3_000_000)
    assert seen.status_code == 200, seen.text
    body = seen.json()
    assert body["size"] == 3_000_000 and body["path"] == BASE + "/echo" and body["host"] == "127.0.0.1:8001"
    assert body["cookie"] == "_xsrf=mine"  # neither the portal's login nor the app cookie
    cookies = seen.headers.get_list("set-cookie")
    assert not [c for c in cookies if c.startswith("labgpu")] and any(c.startswith("_xsrf=") for c in cookies)
    big = apps.get(BASE + "/big")
    assert big.status_code == 200 and len(big.content) == BIG
    with apps.websocket_connect(BASE + "/ws", headers={"origin": WS_ORIGIN, "cookie": _cookies(apps)}) as ws:
        ws.send_text("hi")
        assert ws.receive_text() == "echo:hi:_xsrf=mine"
    # Outside the prefix, or climbing out of it: nothing.
    for path in (
        BASE + "/%2e%2e/%2e%2e/bob/jupyterlab/echo",
        BASE + "/a%2Fb",
        "/m/bob/jupyterlab/echo",
        "/x",
    ):
        assert apps.get(path).status_code in (403, 404), path


def test_others_and_other_origins_get_nothing_and_logging_out_ends_it(
    portal: Portal, apps_client: tuple[TestClient, origin.AppsProxy]
) -> None:
    apps, proxy = apps_client
    portal.add_account("alice")
    portal.add_account("bob")
    # bob's own login with a ticket for alice's app (as if forged): refused at the door.
    bob = portal.client()
    assert login(bob, "bob").status_code == 303
    ticket = proxy.tickets.issue(
        account="bob",
        is_admin=False,
        session_id=token_digest(bob.cookies[SESSION_COOKIE]),
        member="alice",
        app="jupyterlab",
    )
    assert apps.get("/_labgpu/enter", params={"ticket": ticket}, follow_redirects=False).status_code == 403
    assert apps.get("/_labgpu/enter", params={"ticket": "forged.0000"}).status_code == 403
    alice = _enter(portal, apps, proxy)
    # A WebSocket from another origin (the portal's, another port) or with no Origin is refused.
    for headers in ({"origin": "http://127.0.0.1:8000"}, {"origin": "http://evil.test"}, {}):
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            apps.websocket_connect(BASE + "/ws", headers={**headers, "cookie": _cookies(apps)}) as ws,
        ):
            ws.send_text("x")
        assert refused.value.code == 1008
    # Logging out ends the app cookie's worth (within the proxy's 5 s cache of a login).
    alice.post("/logout", data={"csrf_token": page_token(alice)})
    proxy._sessions.clear()
    assert apps.get(BASE + "/echo").status_code == 403
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        apps.websocket_connect(BASE + "/ws", headers={"origin": WS_ORIGIN, "cookie": _cookies(apps)}) as ws,
    ):
        ws.receive_text()
    assert refused.value.code == 1008


def test_a_request_flood_is_limited(portal: Portal, apps_client: tuple[TestClient, origin.AppsProxy]) -> None:
    apps, proxy = apps_client
    portal.add_account("alice")
    _enter(portal, apps, proxy)
    proxy.limiter.per_minute = 5
    codes = [apps.get(BASE + "/echo").status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]


def test_the_member_asks_too_often_to_open_apps(portal: Portal) -> None:
    portal.add_account("alice")
    client = portal.client()
    assert login(client, "alice").status_code == 303
    token = page_token(client)
    portal.app.state.app_opens.per_minute = 2
    codes = [
        client.post("/members/alice/apps/jupyterlab/open", data={"csrf_token": token}).status_code
        for _ in range(3)
    ]
    assert codes[2] == 429, codes
