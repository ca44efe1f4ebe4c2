"""Authorization matrix: EVERY route of the app x every role (visitor, member, another member, admin) x
the object's owner. A visitor is sent to the login form (pages) or answered 401 (API); a member calling an
admin route gets 403; a member asking for another member's objects gets 404, word for word the answer for
a member that does not exist. The table must name every route: a new route without an entry fails here.

Each role sends a valid CSRF token, so what is tested is the authorization itself (CSRF has its tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import WebSocketRoute
from starlette.testclient import WebSocketDenialResponse

from labgpu.services.portal import _applications as applications
from labgpu.services.portal import _tokens as api_tokens
from labgpu.services.portal._accounts import Identity
from labgpu.store.models import Role
from tests.web.conftest import Portal, csrf_from, login

PUBLIC, SELF, OBJECT, ADMIN = "public", "self", "object", "admin"

# (method, path) -> who may: PUBLIC (anyone), SELF (any member, on their own things), OBJECT (an admin,
# or the member named in {name}), ADMIN (admins only).
TABLE: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): PUBLIC,
    ("HEAD", "/openapi.json"): PUBLIC,
    ("GET", "/api/docs"): PUBLIC,
    ("HEAD", "/api/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("HEAD", "/docs/oauth2-redirect"): PUBLIC,
    ("MOUNT", "/static"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/api/v1/me"): SELF,
    ("POST", "/api/v1/me/password"): SELF,
    ("POST", "/api/v1/me/logout-everywhere"): SELF,
    ("GET", "/api/v1/tokens"): SELF,
    ("POST", "/api/v1/tokens"): SELF,
    ("DELETE", "/api/v1/tokens/{token_id}"): SELF,
    ("POST", "/api/v1/applications"): PUBLIC,
    ("GET", "/api/v1/applications"): ADMIN,
    ("GET", "/api/v1/applications/{application_id}"): ADMIN,
    ("POST", "/api/v1/applications/{application_id}/approve"): ADMIN,
    ("POST", "/api/v1/applications/{application_id}/reject"): ADMIN,
    ("POST", "/api/v1/applications/{application_id}/retry"): ADMIN,
    ("POST", "/api/v1/members/{name}/reset"): OBJECT,
    ("POST", "/api/v1/members/{name}/initial-password"): OBJECT,
    ("GET", "/api/v1/members/{name}/snapshots"): OBJECT,
    ("POST", "/api/v1/members/{name}/snapshots"): OBJECT,
    ("POST", "/api/v1/members/{name}/snapshots/{snapshot}/restore"): OBJECT,
    ("DELETE", "/api/v1/members/{name}/snapshots/{snapshot}"): OBJECT,
    ("GET", "/api/v1/members/{name}/templates"): OBJECT,
    ("POST", "/api/v1/members/{name}/templates"): OBJECT,
    ("DELETE", "/api/v1/members/{name}/templates/{label}"): OBJECT,
    ("GET", "/api/v1/member-templates"): ADMIN,
    ("GET", "/api/v1/members/{name}/keys"): OBJECT,
    ("POST", "/api/v1/members/{name}/keys"): OBJECT,
    ("DELETE", "/api/v1/members/{name}/keys"): OBJECT,
    ("GET", "/api/v1/members"): ADMIN,
    ("GET", "/api/v1/accounts"): ADMIN,
    ("GET", "/api/v1/members/{name}"): OBJECT,
    ("GET", "/api/v1/members/{name}/connection"): OBJECT,
    ("POST", "/api/v1/members/{name}/disable"): ADMIN,
    ("POST", "/api/v1/members/{name}/enable"): ADMIN,
    ("POST", "/api/v1/members/{name}/no-gpu"): OBJECT,
    ("POST", "/api/v1/members/{name}/{action}"): OBJECT,
    ("GET", "/api/v1/containers"): ADMIN,
    ("GET", "/api/v1/hosts"): ADMIN,
    ("GET", "/api/v1/templates"): ADMIN,
    ("GET", "/api/v1/shares"): ADMIN,
    ("POST", "/api/v1/shares"): ADMIN,
    ("DELETE", "/api/v1/shares/{share}"): ADMIN,
    ("PATCH", "/api/v1/members/{name}"): ADMIN,
    ("DELETE", "/api/v1/members/{name}"): ADMIN,
    ("GET", "/api/v1/audit"): ADMIN,
    ("GET", "/api/v1/gpus"): SELF,
    ("GET", "/api/v1/bookings"): SELF,
    ("POST", "/api/v1/bookings"): SELF,
    ("GET", "/api/v1/bookings/{booking_id}"): SELF,
    ("POST", "/api/v1/bookings/{booking_id}/cancel"): SELF,
    ("POST", "/api/v1/bookings/{booking_id}/extend"): SELF,
    ("POST", "/api/v1/bookings/{booking_id}/approve"): ADMIN,
    ("POST", "/api/v1/bookings/{booking_id}/reject"): ADMIN,
    ("GET", "/api/v1/gpu-free-requests"): SELF,
    ("POST", "/api/v1/gpu-free-requests"): SELF,
    ("POST", "/api/v1/gpu-free-requests/{request_id}/cancel"): SELF,
    ("GET", "/"): PUBLIC,
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("POST", "/lang"): PUBLIC,
    ("GET", "/apply"): PUBLIC,
    ("POST", "/apply"): PUBLIC,
    ("GET", "/account"): SELF,
    ("POST", "/account/password"): SELF,
    ("POST", "/account/tokens"): SELF,
    ("POST", "/account/tokens/{token_id}/revoke"): SELF,
    ("POST", "/account/logout-everywhere"): SELF,
    ("GET", "/me"): SELF,
    ("POST", "/me/power"): SELF,
    ("POST", "/me/no-gpu"): SELF,
    ("POST", "/me/reset"): SELF,
    ("POST", "/me/container-password"): SELF,
    ("POST", "/me/vnc-password"): SELF,
    ("POST", "/me/snapshots"): SELF,
    ("POST", "/me/snapshots/restore"): SELF,
    ("POST", "/me/snapshots/delete"): SELF,
    ("GET", "/me/templates"): SELF,
    ("POST", "/me/templates"): SELF,
    ("POST", "/me/templates/delete"): SELF,
    ("POST", "/me/templates/reset"): SELF,
    ("POST", "/me/keys"): SELF,
    ("POST", "/me/keys/remove"): SELF,
    ("GET", "/me/ssh-config"): SELF,
    ("GET", "/me/connection.rdp"): SELF,
    ("GET", "/admin"): ADMIN,
    ("GET", "/admin/applications"): ADMIN,
    ("GET", "/admin/applications/{application_id}/progress"): ADMIN,
    ("POST", "/admin/applications/{application_id}/approve"): ADMIN,
    ("POST", "/admin/applications/{application_id}/reject"): ADMIN,
    ("POST", "/admin/applications/{application_id}/retry"): ADMIN,
    ("GET", "/admin/members"): ADMIN,
    ("GET", "/admin/members/{name}"): ADMIN,
    ("POST", "/admin/members/{name}/disable"): ADMIN,
    ("POST", "/admin/members/{name}/enable"): ADMIN,
    ("POST", "/admin/members/{name}/limits"): ADMIN,
    ("POST", "/admin/members/{name}/no-gpu"): ADMIN,
    ("POST", "/admin/members/{name}/remove"): ADMIN,
    ("GET", "/admin/containers"): ADMIN,
    ("GET", "/admin/templates"): ADMIN,
    ("POST", "/admin/member-templates/delete"): ADMIN,
    ("GET", "/admin/shares"): ADMIN,
    ("POST", "/admin/shares"): ADMIN,
    ("POST", "/admin/shares/{name}/remove"): ADMIN,
    ("GET", "/admin/hosts"): ADMIN,
    ("GET", "/admin/audit"): ADMIN,
    ("GET", "/gpus"): SELF,
    ("GET", "/bookings"): SELF,
    ("POST", "/bookings"): SELF,
    ("POST", "/bookings/{booking_id}/cancel"): SELF,
    ("POST", "/bookings/{booking_id}/extend"): SELF,
    ("POST", "/bookings/{booking_id}/approve"): ADMIN,
    ("POST", "/bookings/{booking_id}/reject"): ADMIN,
    ("POST", "/gpus/notify-free"): SELF,
    ("POST", "/gpus/notify-free/{request_id}/cancel"): SELF,
    # Web apps and files (issue 16): the member and admins; the apps origin itself is tests/browser's.
    ("GET", "/members/{name}/apps"): OBJECT,
    ("POST", "/members/{name}/apps/{app}/open"): OBJECT,
    ("POST", "/members/{name}/apps/{app}/stop"): OBJECT,
    ("GET", "/members/{name}/files"): OBJECT,
    ("GET", "/members/{name}/files/download"): OBJECT,
    ("PUT", "/members/{name}/files/upload"): OBJECT,
    # The terminal in the browser: its page, and its WebSocket ("WS": the handshake, with the portal's Origin).
    ("GET", "/terminal/{name}"): OBJECT,
    ("WS", "/terminal/{name}/ws"): OBJECT,
    # The member's guide: for everyone logged in; visitors log in first (web/routes/members/guide.py).
    ("GET", "/help"): SELF,
    ("GET", "/help/{page}"): SELF,
    # Two-factor log-in (TOTP): the code step of a log-in, and setting it up on one's own account.
    ("GET", "/login/totp"): PUBLIC,
    ("POST", "/login/totp"): PUBLIC,
    ("GET", "/account/totp"): SELF,
    ("POST", "/account/totp/setup"): SELF,
    ("POST", "/account/totp/confirm"): SELF,
    ("POST", "/account/totp/recovery-codes"): SELF,
    ("POST", "/account/totp/disable"): SELF,
    # Notifications (web/routes/notify.py): a member's own channels only.
    ("GET", "/account/notifications"): SELF,
    ("POST", "/account/notifications"): SELF,
    ("POST", "/account/notifications/{channel_id}/test"): SELF,
    ("POST", "/account/notifications/{channel_id}/remove"): SELF,
    # GPU usage history and fair use
    ("GET", "/api/v1/usage"): SELF,
    ("GET", "/api/v1/usage/events"): SELF,
    ("GET", "/usage"): SELF,
    ("GET", "/usage.csv"): SELF,
    ("POST", "/usage/weekly-report"): SELF,
    ("GET", "/admin/usage"): ADMIN,
    ("GET", "/admin/usage.csv"): ADMIN,
    # Sign-on (LDAP goes through POST /login; OIDC and CAS leave for the provider and come back).
    ("GET", "/login/oidc/{provider}"): PUBLIC,
    ("GET", "/login/oidc/{provider}/callback"): PUBLIC,
    ("GET", "/login/cas"): PUBLIC,
    ("GET", "/login/cas/callback"): PUBLIC,
    ("GET", "/signon/apply"): PUBLIC,
    ("POST", "/signon/apply"): PUBLIC,
    ("POST", "/signon/link"): PUBLIC,
}
# The log-in forms answer 401 to a failed log-in: that is their answer, not a request for one.
LOGIN_FORMS = {"/login", "/login/totp"}
# Routes that end the caller's session: called last in each role's run.
SESSION_ENDING = {"/logout", "/account/logout-everywhere", "/api/v1/me/logout-everywhere"}
OWNER, OTHER = "alice", "bob"


def app_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(method, path) of every route, routers included (old and new FastAPI layouts); a WebSocket route's
    method is "WS", a mount's "MOUNT"."""
    for route in app.routes:
        candidates = route.effective_candidates() if hasattr(route, "effective_candidates") else [route]
        for candidate in candidates:
            # FastAPI's newer layout wraps each route of a router; a WebSocket route's wrapper has no path.
            original = getattr(candidate, "starlette_route", None) or candidate
            if isinstance(original, WebSocketRoute):
                yield "WS", original.path
                continue
            for method in sorted(getattr(candidate, "methods", None) or ["MOUNT"]):
                yield method, candidate.path


def ws_handshake(client: TestClient, url: str, headers: dict[str, str] | None = None) -> Any:
    """A WebSocket handshake as a page of the portal starts it (its Origin): the refusal as an HTTP response,
    or a 101 response when the WebSocket opened (then closed at once)."""
    try:
        with client.websocket_connect(url, headers={"origin": "http://testserver", **(headers or {})}) as ws:
            ws.close()
    except WebSocketDenialResponse as denial:
        return denial
    return httpx.Response(101)


def test_the_table_names_every_route(portal: Portal) -> None:
    assert set(app_routes(portal.app)) == set(TABLE)


def _url(path: str, application_id: int, token_id: int) -> str:
    return (
        path.replace("{name}", OWNER)
        .replace("{application_id}", str(application_id))
        .replace("{token_id}", str(token_id))
        .replace("{booking_id}", "1")
        .replace("{request_id}", "1")
        .replace("{channel_id}", "1")
        .replace("{snapshot}", "snap-1")
        .replace("{label}", "mytools")
        .replace("{share}", "datasets")
        .replace("{action}", "start")
        .replace("{app}", "jupyterlab")
        .replace("/static", "/static/style.css")
        .replace("{page}", "connecting")
    )


def _call(client: TestClient, method: str, path: str, url: str, csrf: str) -> httpx.Response:
    if method == "MOUNT":
        return client.get(url, follow_redirects=False)
    if method == "WS":
        return ws_handshake(client, url)  # type: ignore[no-any-return]
    kwargs: dict[str, Any] = {"follow_redirects": False}
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        if path.startswith("/api/"):
            kwargs["headers"] = {"X-CSRF-Token": csrf}
            if method != "DELETE":
                kwargs["json"] = {}
        else:
            kwargs["data"] = {"csrf_token": csrf}
    return client.request(method, url, **kwargs)


def _denied(response: httpx.Response, path: str) -> str | None:
    """How the request was refused ("login", "forbidden", "hidden"), or None when it was let through."""
    status = response.status_code
    # A refused log-in (the form, the code step, or a sign-on coming back refused) answers 401 too: that is no
    # login wall.
    if status == 401 and path not in LOGIN_FORMS and not path.startswith("/login/"):
        return "login"
    if status == 303 and response.headers["location"].startswith("/login?next="):
        return "login"
    body = response.text
    if status == 403 and ("forbidden" in body or "only an admin may do this" in body):
        return "forbidden"
    if status == 404 and f"no member named {OWNER}" in body:
        return "hidden"
    return None


@pytest.mark.parametrize("role", ["visitor", "member", "other", "admin"])
def test_every_route_for_every_role(portal: Portal, role: str) -> None:
    portal.add_account("boss", role=Role.ADMIN)
    portal.add_account(OWNER)
    portal.add_account(OTHER)
    application = applications.submit(
        portal.svc, name="applicant", email="a@lab.test", password="quiet-walnut-58-harbor"
    )
    identity = Identity(member_id=_member_id(portal, OWNER), name=OWNER, role="member", via="token")
    _, token = api_tokens.create_token(portal.svc, identity, name="laptop", expires_days=30)

    client = portal.client(address=f"192.0.2.{['visitor', 'member', 'other', 'admin'].index(role) + 100}")
    who = {"visitor": None, "member": OWNER, "other": OTHER, "admin": "boss"}[role]
    if who is not None:
        assert login(client, who).status_code == 303
        csrf = csrf_from(client.get("/account").text)
    else:
        csrf = csrf_from(client.get("/login").text)

    routes = sorted(TABLE, key=lambda r: (r[1] in SESSION_ENDING, r[1], r[0]))
    problems = []
    for method, path in routes:
        category = TABLE[(method, path)]
        if path in SESSION_ENDING and who is not None:  # the previous one ended the session
            assert login(client, who).status_code == 303
            csrf = csrf_from(client.get("/account").text)
        response = _call(client, method, path, _url(path, application.id, token.id), csrf)
        denied = _denied(response, path)
        if role == "visitor":
            expected = None if category == PUBLIC else "login"
        elif role == "admin":
            expected = None
        elif category == ADMIN:
            expected = "forbidden"
        elif category == OBJECT and role == "other":
            expected = "hidden"
        else:
            expected = None
        if denied != expected:
            problems.append(f"{role} {method} {path}: {response.status_code} ({denied}), expected {expected}")
    assert problems == []


def _member_id(portal: Portal, name: str) -> int:
    from sqlalchemy import select

    from labgpu.store.models import Member

    with portal.svc.session() as session:
        return int(session.scalars(select(Member.id).where(Member.name == name)).one())


def test_another_members_objects_look_exactly_like_missing_ones(portal: Portal) -> None:
    portal.add_account(OWNER)
    portal.add_account(OTHER)
    client = portal.client()
    assert login(client, OTHER).status_code == 303
    for suffix in ("", "/connection", "/keys", "/snapshots", "/templates"):
        theirs = client.get(f"/api/v1/members/{OWNER}{suffix}")
        nobody = client.get(f"/api/v1/members/nobody-here{suffix}")
        assert theirs.status_code == nobody.status_code == 404
        assert theirs.json()["error"]["reason"] == nobody.json()["error"]["reason"] == "not-found"
        assert theirs.json()["error"]["message"].replace(OWNER, "X") == nobody.json()["error"][
            "message"
        ].replace("nobody-here", "X")


def test_a_member_cannot_revoke_anothers_token(portal: Portal) -> None:
    portal.add_account(OWNER)
    portal.add_account(OTHER)
    identity = Identity(member_id=_member_id(portal, OWNER), name=OWNER, role="member", via="token")
    secret, token = api_tokens.create_token(portal.svc, identity, name="laptop", expires_days=30)
    client = portal.client()
    assert login(client, OTHER).status_code == 303
    csrf = csrf_from(client.get("/account").text)
    assert client.delete(f"/api/v1/tokens/{token.id}", headers={"X-CSRF-Token": csrf}).status_code == 404
    r = client.post(f"/account/tokens/{token.id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 404
    bearer = portal.client(headers={"Authorization": f"Bearer {secret}"})
    assert bearer.get("/api/v1/me").json()["name"] == OWNER
