"""The terminal's page and handshake in the portal without a daemon: its own CSP, the per-account limits, and
the registry that closes terminals at a logout. Opening a real terminal is tests/integration/test_terminal.py
(LXD and Incus) and tests/browser/test_terminal_browser.py (Chromium)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketDenialResponse

from labgpu.services.members import Terminals, TooManyTerminals
from labgpu.settings import Settings
from labgpu.web.app import CONTENT_SECURITY_POLICY, create_app
from tests.web.conftest import Portal, login

ORIGIN = {"origin": "http://testserver"}


def _refusal(client: TestClient, url: str) -> tuple[int, str]:
    with pytest.raises(WebSocketDenialResponse) as refused:
        client.websocket_connect(url, headers=ORIGIN).__enter__()
    return refused.value.status_code, refused.value.json()["error"]["reason"]


def test_the_terminal_page_alone_allows_inline_styles(portal: Portal) -> None:
    portal.add_account("alice")
    client = portal.client()
    assert login(client, "alice").status_code == 303
    page = client.get("/terminal/alice")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "style-src 'self' 'unsafe-inline'" in csp and "script-src 'self';" in csp
    assert "unsafe-inline" not in csp.split("style-src")[0] + csp.split("style-src")[1].split(";", 1)[1]
    assert "The container is not running" in page.text or "no container" in page.text.lower()
    other = client.get("/me").headers["content-security-policy"]  # every other page: no inline style
    assert "unsafe-inline" not in other and other.startswith(CONTENT_SECURITY_POLICY.split("form-action")[0])
    assert 'id="open-terminal"' not in client.get("/me").text  # no running container, no button


def test_terminal_opens_are_limited_per_account(web_settings: Settings) -> None:
    settings = web_settings.model_copy(update={"terminal_opens_per_minute": 2})
    app = create_app(settings, background=False)
    portal = Portal(app, settings)
    portal.add_account("alice")
    portal.add_account("bob")
    alice, bob = portal.client("192.0.2.30"), portal.client("192.0.2.31")
    assert login(alice, "alice").status_code == 303 and login(bob, "bob").status_code == 303
    # alice has no container: each open gets as far as that (409), until her third within a minute.
    assert [_refusal(alice, "/terminal/alice/ws")[0] for _ in range(2)] == [409, 409]
    assert _refusal(alice, "/terminal/alice/ws") == (429, "throttled")
    assert _refusal(bob, "/terminal/bob/ws")[0] == 409  # per account
    app.state.services.engine.dispose()


def test_the_registry_limits_and_closes_terminals_by_session_and_account() -> None:
    registry = Terminals(max_open=2, opens_per_minute=10)
    a1 = registry.admit("alice", "alice", "s1")
    a2 = registry.admit("alice", "alice", "s2")
    with pytest.raises(TooManyTerminals):
        registry.admit("alice", "alice", "s1")
    boss = registry.admit("boss", "alice", "s3")  # an admin in alice's container counts as the admin's
    assert registry.end_session("s1") == 1 and a1.ended_early and a1.close_code == 4001
    assert not a2.ended_early and not boss.ended_early
    assert registry.end_account("alice") == 2  # both of alice's (s1's is still registered until released)
    assert not boss.ended_early
    registry.release(a1)
    registry.release(a2)
    assert registry.open_count("alice") == 0 and registry.open_count() == 1
    assert registry.end_all() == 1 and boss.close_code == 4002
