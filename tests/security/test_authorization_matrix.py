"""The authorization matrix, for the callers tests/web/test_authorization.py does not cover: a personal API
token of each role (owner, another member, admin), and an account that was disabled while it had a login
session and a token.

The route table and its categories are tests/web/test_authorization.py's TABLE (the one list of routes:
a route the app has and the table lacks fails there, and so here every route is driven for these callers
too). What is asserted, per route:

- under /api, a token acts as its member: a member's token gets 403 on admin routes and 404 (word for word
  "no member named ...") on another member's objects; everything else gets past authorization;
- the cookie-based pages ignore bearer tokens: a page asks for a login, a form post has no CSRF token (403);
- a disabled account's session cookie and token are worth nothing at once: 401 (API) or a redirect to the
  login form (pages) on every route that is not public, and its password no longer logs in.

GPU bookings are objects without a ``{name}`` in their path (the table says SELF): for them another
member's token gets exactly the answer for a booking that does not exist, on a real booking (its GPUs from
a served `labgpu agent`, tests/web/gpus).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from labgpu.services.gpus import _bookings as bookings
from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _applications as applications
from labgpu.services.portal import _audit as audit
from labgpu.services.portal import _tokens as api_tokens
from labgpu.services.portal._accounts import Identity
from labgpu.store.models import Role
from labgpu.web.security import CSRF_MESSAGE
from tests.web.conftest import Portal, csrf_from, login
from tests.web.gpus.helpers import PortalFactory, ServedAgent
from tests.web.gpus.helpers import lab as gpu_lab
from tests.web.test_authorization import (
    ADMIN,
    OBJECT,
    OTHER,
    OWNER,
    PUBLIC,
    SESSION_ENDING,
    TABLE,
    _call,
    _denied,
    _member_id,
    _url,
    app_routes,
    ws_handshake,
)

TOKEN_ROLES = ("token-owner", "token-other", "token-admin")
DISABLED_ROLES = ("disabled-session", "disabled-token")
STATE_CHANGING = ("POST", "PUT", "PATCH", "DELETE")


def _classify(response: httpx.Response, path: str) -> str | None:
    """How the request was refused ("login", "forbidden", "hidden", "csrf"), or None when let through."""
    if response.status_code == 403 and CSRF_MESSAGE in response.text:
        return "csrf"
    return _denied(response, path)


def _make_token(portal: Portal, name: str, role: str, label: str) -> tuple[str, int]:
    identity = Identity(member_id=_member_id(portal, name), name=name, role=role, via="token")
    secret, info = api_tokens.create_token(portal.svc, identity, name=label, expires_days=30)
    return secret, info.id


def _setup(portal: Portal) -> tuple[int, int]:
    """boss (admin), alice (the objects' owner) and bob; an application; a token of alice's that the
    /tokens/{token_id} routes name. Returns (application id, that token's id)."""
    portal.add_account("boss", role=Role.ADMIN)
    portal.add_account(OWNER)
    portal.add_account(OTHER)
    application = applications.submit(
        portal.svc, name="applicant", email="a@lab.test", password="quiet-walnut-58-harbor"
    )
    _, target_token = _make_token(portal, OWNER, "member", "laptop")
    return application.id, target_token


def _routes(portal: Portal) -> list[tuple[str, str]]:
    """Every (method, path) of the app itself (not of the table), session-ending ones last."""
    return sorted(set(app_routes(portal.app)), key=lambda r: (r[1] in SESSION_ENDING, r[1], r[0]))


def _send(client: TestClient, method: str, path: str, url: str, headers: dict[str, str]) -> httpx.Response:
    if method == "MOUNT":
        return client.get(url, follow_redirects=False)
    if method == "WS":
        return ws_handshake(client, url, headers)  # type: ignore[no-any-return]
    kwargs: dict[str, Any] = {"follow_redirects": False, "headers": headers}
    if method in STATE_CHANGING and method != "DELETE" and path.startswith("/api/"):
        kwargs["json"] = {}
    return client.request(method, url, **kwargs)


def _expected_for_token(role: str, method: str, path: str, category: str) -> str | None:
    if not path.startswith("/api/"):
        # Pages and forms read the session cookie only; a bearer token is no credential there.
        if category == PUBLIC and method not in STATE_CHANGING:
            return None
        return "csrf" if method in STATE_CHANGING else "login"
    if category == PUBLIC:
        return None
    if role == "token-admin":
        return None
    if category == ADMIN:
        return "forbidden"
    if category == OBJECT and role == "token-other":
        return "hidden"
    return None


@pytest.mark.parametrize("role", TOKEN_ROLES)
def test_every_route_for_an_api_token_of_every_role(portal: Portal, role: str) -> None:
    application_id, target_token = _setup(portal)
    who = {"token-owner": OWNER, "token-other": OTHER, "token-admin": "boss"}[role]
    secret, _ = _make_token(portal, who, "admin" if who == "boss" else "member", "script")
    client = portal.client(address="198.51.100.40")
    bearer = {"Authorization": f"Bearer {secret}"}

    problems = []
    for method, path in _routes(portal):
        if (method, path) not in TABLE:
            problems.append(f"{method} {path}: no entry in the matrix (tests/web/test_authorization.py)")
            continue
        response = _send(client, method, path, _url(path, application_id, target_token), bearer)
        got = _classify(response, path)
        expected = _expected_for_token(role, method, path, TABLE[(method, path)])
        if got != expected:
            problems.append(f"{role} {method} {path}: {response.status_code} ({got}), expected {expected}")
        if expected is None and response.status_code in (401, 403):
            problems.append(f"{role} {method} {path}: {response.status_code} although allowed")
    assert problems == []
    # The token still works at the end (no route revoked it as a side effect), and it is the caller's.
    me = client.get("/api/v1/me", headers=bearer)
    assert me.status_code == 200 and me.json()["name"] == who and me.json()["auth"] == "token"


def _expected_when_disabled(method: str, path: str, category: str, *, via_token: bool) -> str | None:
    if category == PUBLIC:
        if via_token and method in STATE_CHANGING and not path.startswith("/api/"):
            return "csrf"  # a public form, posted by a script with no cookie: no CSRF token either
        return None
    if via_token and not path.startswith("/api/") and method in STATE_CHANGING:
        return "csrf"
    return "login"


@pytest.mark.parametrize("role", DISABLED_ROLES)
def test_a_disabled_accounts_session_and_tokens_stop_working_on_every_route(
    portal: Portal, role: str
) -> None:
    application_id, target_token = _setup(portal)
    secret, _ = _make_token(portal, OWNER, "member", "script")
    client = portal.client(address="198.51.100.41")
    assert login(client, OWNER).status_code == 303
    bearer = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me").status_code == 200
    assert portal.client().get("/api/v1/me", headers=bearer).status_code == 200

    # The admin disables alice (the service the CLI and both admin routes call): at once, nothing left.
    assert accounts.set_disabled(portal.svc, OWNER, disabled=True) is True

    via_token = role == "disabled-token"
    if via_token:
        client = portal.client(address="198.51.100.42")
        headers = bearer
    else:
        # What a browser holding the old cookie gets after reloading: the login form and its token.
        form = client.get("/login")
        assert form.status_code == 200, "a disabled account's cookie must not count as logged in"
        headers = {"X-CSRF-Token": csrf_from(form.text)}

    problems = []
    for method, path in _routes(portal):
        if (method, path) not in TABLE:
            problems.append(f"{method} {path}: no entry in the matrix (tests/web/test_authorization.py)")
            continue
        url = _url(path, application_id, target_token)
        if via_token or method == "MOUNT" or path.startswith("/api/") or method not in STATE_CHANGING:
            response = _send(client, method, path, url, headers)
        else:
            response = client.request(
                method, url, data={"csrf_token": headers["X-CSRF-Token"]}, follow_redirects=False
            )
        got = _classify(response, path)
        expected = _expected_when_disabled(method, path, TABLE[(method, path)], via_token=via_token)
        if got != expected:
            problems.append(f"{role} {method} {path}: {response.status_code} ({got}), expected {expected}")
    assert problems == []
    assert login(portal.client("198.51.100.43"), OWNER).status_code == 401
    # Enabling the account again does not bring back what disabling ended.
    accounts.set_disabled(portal.svc, OWNER, disabled=False)
    assert portal.client().get("/api/v1/me", headers=bearer).status_code == 401


def test_another_members_token_finds_no_booking_of_alices(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent
) -> None:
    portal, _ = gpu_lab(gpu_portal, gpu_agent, booking_approval=True)
    tokens = {
        name: _make_token(portal, name, "admin" if name == "boss" else "member", "script")[0]
        for name in ("alice", "bob", "boss")
    }

    def as_(name: str) -> TestClient:
        return portal.client("198.51.100.44", headers={"Authorization": f"Bearer {tokens[name]}"})

    made = as_("alice").post("/api/v1/bookings", json={"gpus": 1, "until": "+2h"})
    assert made.status_code == 201 and made.json()["member"] == "alice", made.text
    mine, missing = made.json()["id"], made.json()["id"] + 100
    before = {e.id for e in audit.list_events(portal.svc, limit=1000)}
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "", None),
        ("POST", "/cancel", {}),
        ("POST", "/extend", {"until": "+1h"}),
    ]
    bob = as_("bob")
    for method, suffix, body in calls:
        theirs = bob.request(method, f"/api/v1/bookings/{mine}{suffix}", json=body)
        nothing = bob.request(method, f"/api/v1/bookings/{missing}{suffix}", json=body)
        assert theirs.status_code == nothing.status_code == 404, (suffix, theirs.text)
        assert theirs.json()["error"]["message"].replace(str(mine), "N") == nothing.json()["error"][
            "message"
        ].replace(str(missing), "N")
    for suffix, body in (("/approve", {}), ("/reject", {"reason": "mine now"})):
        r = bob.post(f"/api/v1/bookings/{mine}{suffix}", json=body)
        assert r.status_code == 403 and r.json()["error"]["message"] == "only an admin may do this"
    r = bob.post("/api/v1/bookings", json={"gpus": 1, "until": "+1h", "member": "alice"})
    assert r.status_code == 403
    assert bob.get("/api/v1/bookings").json() == []
    assert bob.get("/api/v1/bookings?member=alice").status_code == 403
    assert [e.id for e in audit.list_events(portal.svc, limit=1000) if e.id not in before] == []
    # The owner's and an admin's tokens act on it.
    assert as_("alice").get(f"/api/v1/bookings/{mine}").json()["status"] == "pending"
    assert as_("boss").post(f"/api/v1/bookings/{mine}/approve", json={}).json()["status"] == "approved"
    assert bookings.get_booking(portal.svc, mine).status == "approved"


def test_another_members_token_finds_no_gpu_free_request_of_alices(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent
) -> None:
    """A "tell me when GPUs are free" request is alice's: bob's token gets exactly the answer for one that
    does not exist, cannot ask on her behalf or list hers, and changes nothing."""
    portal, _ = gpu_lab(gpu_portal, gpu_agent)
    tokens = {
        name: _make_token(portal, name, "admin" if name == "boss" else "member", "script")[0]
        for name in ("alice", "bob", "boss")
    }

    def as_(name: str) -> TestClient:
        return portal.client("198.51.100.45", headers={"Authorization": f"Bearer {tokens[name]}"})

    made = as_("alice").post("/api/v1/gpu-free-requests", json={"count": 2})
    assert made.status_code == 201 and made.json()["member"] == "alice", made.text
    assert made.json()["host"] == "gpu1" and made.json()["status"] == "waiting"
    mine, missing = made.json()["id"], made.json()["id"] + 100
    before = {e.id for e in audit.list_events(portal.svc, limit=1000)}
    bob = as_("bob")
    theirs = bob.post(f"/api/v1/gpu-free-requests/{mine}/cancel", json={})
    nothing = bob.post(f"/api/v1/gpu-free-requests/{missing}/cancel", json={})
    assert theirs.status_code == nothing.status_code == 404, theirs.text
    assert theirs.json()["error"]["message"].replace(str(mine), "N") == nothing.json()["error"][
        "message"
    ].replace(str(missing), "N")
    r = bob.post("/api/v1/gpu-free-requests", json={"count": 1, "member": "alice"})
    assert r.status_code == 403, r.text
    assert bob.get("/api/v1/gpu-free-requests").json() == []
    assert bob.get("/api/v1/gpu-free-requests?member=alice").status_code == 403
    assert [e.id for e in audit.list_events(portal.svc, limit=1000) if e.id not in before] == []
    # The owner sees it; an admin cancels it.
    assert [r["id"] for r in as_("alice").get("/api/v1/gpu-free-requests").json()] == [mine]
    done = as_("boss").post(f"/api/v1/gpu-free-requests/{mine}/cancel", json={})
    assert done.status_code == 200 and done.json()["status"] == "cancelled", done.text


# Two-factor log-in required for admins (require_totp_for_admins) --------------------------------------


def _expected_for_an_admin_without_totp(method: str, path: str, category: str) -> set[str | None]:
    if category == ADMIN:
        return {"totp"}
    if category == OBJECT:
        return {"hidden"}  # alice's objects: as for any member, no admin power left
    return {None}


def test_every_route_for_an_admin_whose_required_second_factor_is_missing(web_settings: Any) -> None:
    """With require_totp_for_admins, an admin's password-only session is a member's: every admin route
    leads to setting up TOTP (pages) or answers 403 totp-enrolment-required (API), another member's objects
    are hidden, the rest works; the same admin's API token is not affected (tested in tests/web/test_totp)."""
    from labgpu.web.app import create_app

    settings = web_settings.model_copy(update={"require_totp_for_admins": True})
    portal = Portal(create_app(settings), settings)
    with TestClient(portal.app):
        application_id, target_token = _setup(portal)
        client = portal.client(address="198.51.100.45")
        assert login(client, "boss").headers["location"] == "/account/totp?next=/me"
        csrf = csrf_from(client.get("/account").text)

        problems = []
        for method, path in _routes(portal):
            if path in SESSION_ENDING:
                assert login(client, "boss").status_code == 303
                csrf = csrf_from(client.get("/account").text)
            response = _call(client, method, path, _url(path, application_id, target_token), csrf)
            got = _classify(response, path)
            location = response.headers.get("location", "") if response.status_code == 303 else ""
            if got is None and location.startswith("/account/totp?next="):
                got = "totp"  # a page: set it up first
            if got is None and response.status_code == 403 and "totp-enrolment-required" in response.text:
                got = "totp"  # the API says why
            expected = _expected_for_an_admin_without_totp(method, path, TABLE[(method, path)])
            if got not in expected:
                problems.append(f"{method} {path}: {response.status_code} ({got}), expected {expected}")
        assert problems == []
