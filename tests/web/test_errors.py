"""One error handler: JSON under /api, an HTML page elsewhere, a login redirect for pages."""

from __future__ import annotations

from tests.web.conftest import Portal, login


def test_api_errors_are_json(portal: Portal) -> None:
    client = portal.client()
    r = client.get("/api/v1/me")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": {
            "reason": "login-required",
            "message": "log in first, or send a personal API token (Authorization: Bearer lgp_...)",
        }
    }
    r = client.get("/api/v1/no-such-thing")
    assert r.status_code == 404 and r.json()["error"]["reason"] == "not-found"
    r = client.put("/api/v1/me")
    assert r.status_code == 405 and r.json()["error"]["reason"] == "method-not-allowed"


def test_pages_render_errors_as_html_and_ask_for_a_login(portal: Portal) -> None:
    client = portal.client()
    r = client.get("/account", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/account"
    r = client.get("/no-such-page")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert "There is no such page." in r.text


def test_validation_errors_on_pages_are_html(portal: Portal) -> None:
    portal.add_account("alice")
    client = portal.client()
    login(client, "alice")
    from tests.web.conftest import page_token

    r = client.post("/me/power", data={"action": "explode", "csrf_token": page_token(client)})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/html")
    assert "action" in r.text


def test_security_headers_and_openapi(portal: Portal) -> None:
    client = portal.client()
    r = client.get("/login")
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    spec = client.get("/openapi.json").json()
    for path in (
        "/api/v1/me",
        "/api/v1/me/password",
        "/api/v1/tokens",
        "/api/v1/tokens/{token_id}",
        "/api/v1/members",
        "/api/v1/members/{name}",
        "/api/v1/members/{name}/{action}",
        "/api/v1/audit",
    ):
        assert path in spec["paths"], path
    assert "/login" not in spec["paths"]  # pages are not part of the API
    assert client.get("/static/htmx.min.js").status_code == 200
