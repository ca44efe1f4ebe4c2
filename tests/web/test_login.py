"""Logging in and out, sessions (fixation, timeouts, revocation) and login throttling."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from labgpu.services.portal._accounts import token_digest
from labgpu.store.models import LoginSession, Role, utcnow
from labgpu.web.security import SESSION_COOKIE
from tests.web.conftest import PASSWORD, Portal, csrf_from, login


def test_there_are_no_default_accounts(portal: Portal) -> None:
    client = portal.client()
    for name, password in [("admin", "admin"), ("admin", "password"), ("root", "root"), ("labgpu", "labgpu")]:
        r = login(client, name, password)
        assert r.status_code == 401


def test_login_sets_a_safe_session_cookie_and_logout_ends_it(portal: Portal) -> None:
    portal.add_account("alice")
    client = portal.client()
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    r = login(client, "alice", next="/account")
    assert r.status_code == 303
    assert r.headers["location"] == "/account"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # plain http, secure_cookies off
    assert client.get("/", follow_redirects=False).headers["location"] == "/me"
    assert client.get("/api/v1/me").json()["name"] == "alice"

    token = client.cookies[SESSION_COOKIE]
    r = client.post(
        "/logout", data={"csrf_token": csrf_from(client.get("/account").text)}, follow_redirects=False
    )
    assert r.status_code == 303
    # The old cookie, replayed, is worth nothing: the session is revoked on the server.
    replay = portal.client(cookies={SESSION_COOKIE: token})
    assert replay.get("/api/v1/me").status_code == 401
    assert replay.get("/account", follow_redirects=False).headers["location"].startswith("/login")


def test_cookie_is_secure_over_https_or_when_configured(portal: Portal) -> None:
    portal.add_account("alice")
    https = portal.client(base_url="https://portal.example")
    r = login(https, "alice")
    assert "Secure" in r.headers["set-cookie"]


def test_wrong_password_and_unknown_name_get_the_same_answer(portal: Portal) -> None:
    portal.add_account("alice")
    client = portal.client()
    wrong = login(client, "alice", "not-the-password")
    nobody = login(client, "nobody", "not-the-password")
    assert wrong.status_code == nobody.status_code == 401
    assert "wrong name or password" in wrong.text
    assert "wrong name or password" in nobody.text
    assert SESSION_COOKIE not in client.cookies


def test_login_gives_a_new_session_id_every_time_no_fixation(portal: Portal) -> None:
    portal.add_account("alice")
    planted = "attacker-chosen-session-token"
    client = portal.client()
    client.cookies.set(SESSION_COOKIE, planted, domain="testserver.local")
    login(client, "alice")
    first = client.cookies[SESSION_COOKIE]
    assert first != planted
    login(client, "alice")
    second = client.cookies[SESSION_COOKIE]
    assert second != first
    # Logging in again ends the session the browser had.
    assert portal.client(cookies={SESSION_COOKIE: first}).get("/api/v1/me").status_code == 401
    assert portal.client(cookies={SESSION_COOKIE: second}).get("/api/v1/me").status_code == 200
    # Only hashes are stored.
    with portal.svc.session() as s:
        ids = set(s.scalars(select(LoginSession.id)))
    assert first not in ids and token_digest(first) in ids


def test_next_cannot_send_the_browser_elsewhere(portal: Portal) -> None:
    portal.add_account("alice")
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        r = login(portal.client(), "alice", next=target)
        assert r.headers["location"] == "/me", target


def _age_session(portal: Portal, token: str, **times: object) -> None:
    with portal.svc.session() as s:
        s.execute(update(LoginSession).where(LoginSession.id == token_digest(token)).values(**times))


def test_idle_and_absolute_timeouts(portal: Portal) -> None:
    portal.add_account("alice")
    idle = portal.settings.session_idle_minutes
    client = portal.client()
    login(client, "alice")
    token = client.cookies[SESSION_COOKIE]
    _age_session(portal, token, last_seen_at=utcnow() - timedelta(minutes=idle - 1))
    assert client.get("/api/v1/me").status_code == 200  # and the request counts as activity
    _age_session(portal, token, last_seen_at=utcnow() - timedelta(minutes=idle + 1))
    assert client.get("/api/v1/me").status_code == 401

    login(client, "alice")
    token = client.cookies[SESSION_COOKIE]
    _age_session(portal, token, expires_at=utcnow() - timedelta(seconds=1))
    assert client.get("/api/v1/me").status_code == 401


def test_throttling_per_account(portal: Portal) -> None:
    portal.add_account("alice")
    limit = portal.settings.login_max_failures_per_account
    attacker = portal.client("198.51.100.7")
    for _ in range(limit):
        assert login(attacker, "alice", "guess-guess").status_code == 401
    r = login(attacker, "alice", "guess-guess")
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) > 0
    assert "Too many failed logins" in r.text
    # Even the right password waits, from anywhere: the account is what is protected.
    assert login(portal.client("203.0.113.9"), "alice").status_code == 429
    # Other accounts are not affected.
    portal.add_account("bob")
    assert login(portal.client("203.0.113.9"), "bob").status_code == 303
    # The count is in the store: a restarted portal (or another worker) still refuses.
    restarted = portal.rebuilt()
    assert login(restarted.client("203.0.113.9"), "alice").status_code == 429


def test_successful_login_clears_the_accounts_own_count(portal: Portal) -> None:
    portal.add_account("alice")
    limit = portal.settings.login_max_failures_per_account
    client = portal.client()
    for _ in range(limit - 1):
        login(client, "alice", "typo-typo")
    assert login(client, "alice").status_code == 303
    for _ in range(limit - 1):
        assert login(client, "alice", "typo-typo").status_code == 401
    assert login(client, "alice").status_code == 303


def test_throttling_per_address_is_not_reset_by_logging_in_to_another_account(portal: Portal) -> None:
    portal.add_account("mallory")
    for name in ("v1", "v2", "v3", "v4", "v5", "v6", "v7"):
        portal.add_account(name)
    limit = portal.settings.login_max_failures_per_address
    per_account = portal.settings.login_max_failures_per_account
    address = "198.51.100.66"
    victims = ["v1", "v2", "v3", "v4", "v5", "v6", "v7"]
    failures = 0
    while failures < limit:
        victim = victims[failures // (per_account - 1)]
        assert login(portal.client(address), victim, "guess-guess").status_code == 401
        failures += 1
        # The attacker logs in to their own account now and then: that does not clear the count.
        if failures % 7 == 0:
            assert login(portal.client(address), "mallory").status_code == 303
    r = login(portal.client(address), "v7", "guess-guess")
    assert r.status_code == 429
    assert login(portal.client(address), "mallory").status_code == 429
    # Another address is not affected.
    assert login(portal.client("192.0.2.200"), "v7").status_code == 303


def test_mistyped_password_then_success_is_forgiven_for_the_address(portal: Portal) -> None:
    """A lab behind one NAT address: members who mistype and then log in do not lock each other out."""
    limit = portal.settings.login_max_failures_per_address
    names = [f"m{i}" for i in range(limit)]
    for name in names:
        portal.add_account(name)
    nat = "192.0.2.99"
    for name in names:
        assert login(portal.client(nat), name, "typo-typo").status_code == 401
        assert login(portal.client(nat), name).status_code == 303
    portal.add_account("late")
    assert login(portal.client(nat), "late").status_code == 303


def test_disabled_account_cannot_log_in(portal: Portal) -> None:
    from labgpu.services.portal import _accounts as accounts

    portal.add_account("alice", role=Role.MEMBER)
    accounts.set_disabled(portal.svc, "alice", disabled=True)
    r = login(portal.client(), "alice", PASSWORD)
    assert r.status_code == 401
    assert "disabled" in r.text
