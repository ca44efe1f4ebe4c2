"""CSRF: every state-changing request with a cookie session needs the token bound to that session."""

from __future__ import annotations

import re

from labgpu.web.security import ANON_COOKIE
from tests.web.conftest import PASSWORD, Portal, csrf_from, login, page_token


def _logged_in(portal: Portal, name: str = "alice"):  # type: ignore[no-untyped-def]
    portal.add_account(name)
    client = portal.client()
    assert login(client, name).status_code == 303
    return client


def test_form_post_without_or_with_a_wrong_token_is_refused(portal: Portal) -> None:
    client = _logged_in(portal)
    for data in ({}, {"csrf_token": "0" * 64}, {"csrf_token": ""}):
        r = client.post("/account/tokens", data={"name": "laptop", **data})
        assert r.status_code == 403, data
        assert "reload the page" in r.text
    assert client.get("/api/v1/tokens").json() == []
    r = client.post("/account/tokens", data={"name": "laptop", "csrf_token": page_token(client)})
    assert r.status_code == 200
    assert re.search(r"lgp_[A-Za-z0-9_-]{20,}", r.text)


def test_json_and_htmx_requests_send_the_token_as_a_header(portal: Portal) -> None:
    client = _logged_in(portal)
    assert client.post("/api/v1/tokens", json={"name": "ci"}).status_code == 403
    r = client.post("/api/v1/tokens", json={"name": "ci"}, headers={"X-CSRF-Token": "f" * 64})
    assert r.status_code == 403
    assert r.json()["error"]["reason"] == "csrf"
    token = page_token(client)
    r = client.post("/api/v1/tokens", json={"name": "ci"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201
    token_id = r.json()["id"]
    assert client.delete(f"/api/v1/tokens/{token_id}").status_code == 403
    assert client.delete(f"/api/v1/tokens/{token_id}", headers={"X-CSRF-Token": token}).status_code == 204


def test_a_token_from_another_session_does_not_work(portal: Portal) -> None:
    alice = _logged_in(portal, "alice")
    bob = _logged_in(portal, "bob")
    r = alice.post("/account/tokens", data={"name": "x", "csrf_token": page_token(bob)})
    assert r.status_code == 403


def test_the_login_form_needs_its_pre_session_token(portal: Portal) -> None:
    portal.add_account("alice")
    # A cross-site form posting a login (login CSRF) has neither the cookie nor the token.
    r = portal.client().post("/login", data={"name": "alice", "password": PASSWORD}, follow_redirects=False)
    assert r.status_code == 403
    client = portal.client()
    form = client.get("/login")
    assert ANON_COOKIE in client.cookies
    assert "HttpOnly" in form.headers["set-cookie"]
    r = client.post(
        "/login",
        data={"name": "alice", "password": PASSWORD, "csrf_token": "a" * 64},
        follow_redirects=False,
    )
    assert r.status_code == 403
    r = client.post(
        "/login",
        data={"name": "alice", "password": PASSWORD, "csrf_token": csrf_from(form.text)},
        follow_redirects=False,
    )
    assert r.status_code == 303


def test_logout_and_language_switch_are_protected_too(portal: Portal) -> None:
    client = _logged_in(portal)
    assert client.post("/logout", follow_redirects=False).status_code == 403
    assert client.get("/api/v1/me").status_code == 200  # still logged in
    assert client.post("/lang", data={"lang": "zh_Hans"}, follow_redirects=False).status_code == 403


def test_bearer_token_works_for_the_api_without_csrf_but_not_for_forms(portal: Portal) -> None:
    client = _logged_in(portal)
    token = client.post(
        "/api/v1/tokens", json={"name": "script"}, headers={"X-CSRF-Token": page_token(client)}
    ).json()["token"]
    script = portal.client()
    bearer = {"Authorization": f"Bearer {token}"}
    me = script.get("/api/v1/me", headers=bearer)
    assert me.status_code == 200
    assert me.json()["name"] == "alice" and me.json()["auth"] == "token"
    # State changes through the API need no CSRF token with a bearer token (no cookies are involved).
    r = script.post("/api/v1/tokens", json={"name": "made-by-script"}, headers=bearer)
    assert r.status_code == 201
    # The cookie-based pages and forms ignore the bearer token.
    assert script.get("/account", headers=bearer, follow_redirects=False).status_code == 303
    r = script.post("/account/tokens", data={"name": "x"}, headers=bearer, follow_redirects=False)
    assert r.status_code == 403
    r = script.post("/account/logout-everywhere", headers=bearer, follow_redirects=False)
    assert r.status_code == 403
    # A bad bearer token is a 401, never a fall-back to cookies.
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer lgp_nope"}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 401


def test_an_api_call_with_no_credentials_is_a_401_not_a_csrf_error(portal: Portal) -> None:
    r = portal.client().post("/api/v1/tokens", json={"name": "x"})
    assert r.status_code == 401
    assert r.json()["error"]["reason"] == "login-required"
    assert r.headers["WWW-Authenticate"] == "Bearer"
