"""CSRF on EVERY state-changing route of the app (tests/web/test_csrf.py shows the mechanism on a few): with a
login session cookie, a POST/PUT/PATCH/DELETE without the token, or with another session's token, is refused
with 403 before the route runs, and changes nothing. The routes come from app.routes, so a new one is
covered the day it is added."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from labgpu.services.portal import _applications as applications
from labgpu.services.portal import _audit as audit
from labgpu.store.models import Role
from labgpu.web.security import CSRF_MESSAGE
from tests.web.conftest import Portal, login, page_token
from tests.web.test_authorization import OWNER, _url, app_routes

STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def _send(client: Any, method: str, path: str, url: str, token: str | None) -> httpx.Response:
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if path.startswith("/api/"):
        if token is not None:
            kwargs["headers"] = {"X-CSRF-Token": token}
        if method != "DELETE":
            kwargs["json"] = {}
    else:
        kwargs["data"] = {"csrf_token": token} if token is not None else {"x": "1"}
    return client.request(method, url, **kwargs)


@pytest.mark.parametrize("role", [Role.ADMIN, Role.MEMBER])
def test_every_state_changing_route_needs_the_sessions_csrf_token(portal: Portal, role: Role) -> None:
    portal.add_account("boss", role=Role.ADMIN)
    portal.add_account(OWNER)
    application = applications.submit(
        portal.svc, name="applicant", email="a@lab.test", password="quiet-walnut-58-harbor"
    )
    me = "boss" if role == Role.ADMIN else OWNER
    victim = portal.client("198.51.100.70")
    assert login(victim, me).status_code == 303
    attacker = portal.client("198.51.100.71")
    assert login(attacker, OWNER if me == "boss" else "boss").status_code == 303
    foreign_token = page_token(attacker)  # valid, but bound to another session

    routes = sorted((m, p) for m, p in app_routes(portal.app) if m in STATE_CHANGING)
    assert len(routes) >= 40, routes
    before = [e.id for e in audit.list_events(portal.svc, limit=1000)]
    problems = []
    for method, path in routes:
        url = _url(path, application.id, 1)
        for token in (None, "0" * 64, foreign_token):
            r = _send(victim, method, path, url, token)
            if r.status_code != 403 or CSRF_MESSAGE not in r.text:
                problems.append(f"{method} {path} with token {str(token)[:8]!r}: {r.status_code}")
    assert problems == []
    # Nothing happened: no audit row, and the session still works (not even /logout went through).
    assert [e.id for e in audit.list_events(portal.svc, limit=1000)] == before
    assert victim.get("/api/v1/me").status_code == 200


# WebSockets: a browser sends the member's cookies with a handshake that any page may start, so every
# WebSocket route checks the handshake's Origin (web/security.py: check_origin). SameSite does not tell the
# ports of one host apart: a page served on another port of the portal's host is another origin.
FOREIGN_ORIGINS = [
    None,
    "null",
    "http://testserver:8081",
    "http://testserver.evil.test",
    "https://testserver",
    "http://127.0.0.1",
    "http://testserver/",
]


def test_every_websocket_refuses_a_handshake_from_another_origin(portal: Portal) -> None:
    from starlette.testclient import WebSocketDenialResponse

    portal.add_account(OWNER)
    client = portal.client("198.51.100.72")
    assert login(client, OWNER).status_code == 303
    routes = sorted(p for m, p in app_routes(portal.app) if m == "WS")
    assert routes, "no WebSocket route found"
    before = [e.id for e in audit.list_events(portal.svc, limit=1000)]
    problems = []
    for path in routes:
        url = _url(path, 1, 1)
        for origin in FOREIGN_ORIGINS:
            headers = {} if origin is None else {"origin": origin}
            try:
                with client.websocket_connect(url, headers=headers):
                    problems.append(f"{path} from {origin}: opened")
            except WebSocketDenialResponse as denial:
                if denial.status_code != 403 or denial.json()["error"]["reason"] != "bad-origin":
                    problems.append(f"{path} from {origin}: {denial.status_code} {denial.text[:100]}")
        # The portal's own origin gets past this check (to the next: here, alice has no container).
        try:
            with client.websocket_connect(url, headers={"origin": "http://testserver"}):
                pass
        except WebSocketDenialResponse as denial:
            if denial.json()["error"]["reason"] == "bad-origin":
                problems.append(f"{path} from the portal itself: refused as another origin")
    assert problems == []
    assert [e.id for e in audit.list_events(portal.svc, limit=1000)] == before
