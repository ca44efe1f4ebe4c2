"""Accounts over the API and pages: password changes, tokens, disabling, object-level checks, audit."""

from __future__ import annotations

from fastapi.testclient import TestClient

from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _audit as audit
from labgpu.store.models import Role
from tests.web.conftest import PASSWORD, Portal, login, page_token

NEW_PASSWORD = "granite-lemon-58-harbour"


def _logged_in(
    portal: Portal, name: str, *, role: Role = Role.MEMBER, address: str = "192.0.2.10"
) -> TestClient:
    portal.add_account(name, role=role)
    client = portal.client(address)
    assert login(client, name).status_code == 303
    return client


def _csrf(client: TestClient) -> dict[str, str]:
    return {"X-CSRF-Token": page_token(client)}


def _new_token(client: TestClient, name: str = "script") -> str:
    r = client.post("/api/v1/tokens", json={"name": name}, headers=_csrf(client))
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


def test_password_change_ends_the_other_sessions_and_keeps_this_browser_logged_in(portal: Portal) -> None:
    laptop = _logged_in(portal, "alice")
    phone = portal.client("192.0.2.11")
    login(phone, "alice")
    token = _new_token(laptop)
    r = laptop.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
            "csrf_token": page_token(laptop),
        },
    )
    assert r.status_code == 200
    assert "Your password was changed" in r.text
    assert laptop.get("/api/v1/me").status_code == 200  # a new session was issued to this browser
    assert phone.get("/api/v1/me").status_code == 401
    # API tokens keep working after a password change.
    assert portal.client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert login(portal.client("192.0.2.12"), "alice", PASSWORD).status_code == 401
    assert login(portal.client("192.0.2.12"), "alice", NEW_PASSWORD).status_code == 303


def test_password_change_checks_the_current_password_and_the_strength(portal: Portal) -> None:
    client = _logged_in(portal, "alice")
    headers = _csrf(client)
    wrong = client.post(
        "/api/v1/me/password",
        json={"current_password": "nope-nope-nope", "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert wrong.status_code == 403
    assert wrong.json()["error"]["reason"] == "wrong-password"
    for weak, why in (
        ("short", "too short"),
        ("password123", "most common"),
        ("alice-rocks-1", "account name"),
    ):
        r = client.post(
            "/api/v1/me/password", json={"current_password": PASSWORD, "new_password": weak}, headers=headers
        )
        assert r.status_code == 400, weak
        assert r.json()["error"]["reason"] == "weak-password"
        assert why in r.json()["error"]["message"]
    ok = client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=headers,
    )
    assert ok.status_code == 200
    assert client.get("/api/v1/me").status_code == 200


def test_tokens_are_shown_once_listed_without_the_secret_and_revocable(portal: Portal) -> None:
    client = _logged_in(portal, "alice")
    token = _new_token(client, "laptop")
    listed = client.get("/api/v1/tokens").json()
    assert [t["name"] for t in listed] == ["laptop"]
    assert token not in str(listed)
    assert token.startswith(listed[0]["prefix"])
    bearer = {"Authorization": f"Bearer {token}"}
    assert portal.client().get("/api/v1/me", headers=bearer).status_code == 200
    r = client.post(f"/account/tokens/{listed[0]['id']}/revoke", data={"csrf_token": page_token(client)})
    assert r.status_code == 200
    assert portal.client().get("/api/v1/me", headers=bearer).status_code == 401
    assert client.get("/api/v1/tokens").json() == []


def test_a_member_cannot_revoke_another_members_token(portal: Portal) -> None:
    alice = _logged_in(portal, "alice")
    bob = _logged_in(portal, "bob", address="192.0.2.20")
    _new_token(alice)
    alice_token_id = alice.get("/api/v1/tokens").json()[0]["id"]
    r = bob.delete(f"/api/v1/tokens/{alice_token_id}", headers=_csrf(bob))
    assert r.status_code == 404
    assert len(alice.get("/api/v1/tokens").json()) == 1


def test_logout_everywhere_ends_every_session(portal: Portal) -> None:
    laptop = _logged_in(portal, "alice")
    phone = portal.client("192.0.2.11")
    login(phone, "alice")
    r = laptop.post(
        "/account/logout-everywhere", data={"csrf_token": page_token(laptop)}, follow_redirects=False
    )
    assert r.status_code == 303
    assert laptop.get("/api/v1/me").status_code == 401
    assert phone.get("/api/v1/me").status_code == 401


def test_disabling_an_account_ends_its_sessions_and_revokes_its_tokens(portal: Portal) -> None:
    admin = _logged_in(portal, "boss", role=Role.ADMIN)
    alice = _logged_in(portal, "alice", address="192.0.2.30")
    token = _new_token(alice)
    bearer = {"Authorization": f"Bearer {token}"}
    r = admin.post("/api/v1/members/alice/disable", headers=_csrf(admin))
    assert r.status_code == 200
    assert r.json()["disabled"] is True
    assert alice.get("/api/v1/me").status_code == 401
    assert portal.client().get("/api/v1/me", headers=bearer).status_code == 401
    assert login(portal.client("192.0.2.31"), "alice").status_code == 401
    # Enabling lets them log in again; the revoked token stays revoked.
    assert admin.post("/api/v1/members/alice/enable", headers=_csrf(admin)).json()["disabled"] is False
    assert login(portal.client("192.0.2.31"), "alice").status_code == 303
    assert portal.client().get("/api/v1/me", headers=bearer).status_code == 401
    # An admin cannot lock themself out.
    r = admin.post("/api/v1/members/boss/disable", headers=_csrf(admin))
    assert r.status_code == 400


def test_members_cannot_see_each_other_nor_call_admin_routes(portal: Portal) -> None:
    alice = _logged_in(portal, "alice")
    _logged_in(portal, "bob", address="192.0.2.20")
    headers = _csrf(alice)
    # Another member's objects are answered exactly like objects that do not exist.
    for path in ("/api/v1/members/bob", "/api/v1/members/bob/connection"):
        other, missing = alice.get(path), alice.get(path.replace("bob", "nobody"))
        assert other.status_code == missing.status_code == 404
        assert other.json()["error"]["message"].replace("bob", "X") == missing.json()["error"][
            "message"
        ].replace("nobody", "X")
    for action in ("start", "stop", "restart"):
        assert alice.post(f"/api/v1/members/bob/{action}", headers=headers).status_code == 404
    # Their own record is visible.
    me = alice.get("/api/v1/members/alice")
    assert me.status_code == 200
    assert me.json()["name"] == "alice"
    # Admin routes.
    for method, path in (
        ("GET", "/api/v1/members"),
        ("GET", "/api/v1/accounts"),
        ("GET", "/api/v1/audit"),
        ("POST", "/api/v1/members/bob/disable"),
        ("POST", "/api/v1/members/alice/enable"),
    ):
        r = alice.request(method, path, headers=headers)
        assert r.status_code == 403, path
        assert r.json()["error"]["reason"] == "forbidden"


def test_admin_sees_every_member(portal: Portal) -> None:
    admin = _logged_in(portal, "boss", role=Role.ADMIN)
    _logged_in(portal, "alice", address="192.0.2.20")
    names = [m["name"] for m in admin.get("/api/v1/members", params={"live": "false"}).json()]
    assert names == ["alice", "boss"]
    assert admin.get("/api/v1/members/alice", params={"live": "false"}).status_code == 200
    accounts_ = {a["name"]: a for a in admin.get("/api/v1/accounts").json()}
    assert accounts_["alice"]["role"] == "member" and accounts_["boss"]["role"] == "admin"


def test_an_unknown_power_action_is_a_422_with_a_clear_message(portal: Portal) -> None:
    admin = _logged_in(portal, "boss", role=Role.ADMIN)
    r = admin.post("/api/v1/members/alice/reboot", headers=_csrf(admin))
    assert r.status_code == 422
    assert r.json()["error"]["reason"] == "invalid-request"
    assert "action" in r.json()["error"]["message"]
    r = admin.post("/api/v1/tokens", json={"name": ""}, headers=_csrf(admin))
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("invalid request: name:")


def test_every_state_change_is_audited_with_who_and_where(portal: Portal) -> None:
    admin = _logged_in(portal, "boss", role=Role.ADMIN, address="192.0.2.1")
    alice = _logged_in(portal, "alice", address="192.0.2.2")
    login(portal.client("192.0.2.3"), "alice", "wrong-wrong-wrong")
    token = _new_token(alice)
    token_id = alice.get("/api/v1/tokens").json()[0]["id"]
    alice.delete(f"/api/v1/tokens/{token_id}", headers=_csrf(alice))
    alice.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=_csrf(alice),
    )
    alice.post("/api/v1/me/logout-everywhere", headers=_csrf(alice))
    admin.post("/api/v1/members/alice/disable", headers=_csrf(admin))
    admin.post("/api/v1/members/alice/enable", headers=_csrf(admin))
    assert token

    events = audit.list_events(portal.svc, limit=100)
    seen = {(e.action, e.actor, e.target, e.source_address) for e in events}
    expected = {
        ("account.create", "root@cli", "boss", None),
        ("account.create", "root@cli", "alice", None),
        ("account.login", "boss", "boss", "192.0.2.1"),
        ("account.login", "alice", "alice", "192.0.2.2"),
        ("account.login.failed", "anonymous", "alice", "192.0.2.3"),
        ("token.create", "alice", "alice", "192.0.2.2"),
        ("token.revoke", "alice", "alice", "192.0.2.2"),
        ("account.password.change", "alice", "alice", "192.0.2.2"),
        ("account.logout_everywhere", "alice", "alice", "192.0.2.2"),
        ("account.disable", "boss", "alice", "192.0.2.1"),
        ("account.enable", "boss", "alice", "192.0.2.1"),
    }
    assert expected <= seen, expected - seen
    # No secret ends up in the log.
    assert token not in str([e.detail for e in events])
    assert PASSWORD not in str([e.detail for e in events])

    # The admin reads it over the API, filtered.
    r = admin.get("/api/v1/audit", params={"target": "alice", "action": "account."})
    assert r.status_code == 200
    actions = [e["action"] for e in r.json()]
    assert "account.disable" in actions and "token.create" not in actions
    page1 = admin.get("/api/v1/audit", params={"limit": 3}).json()
    page2 = admin.get("/api/v1/audit", params={"limit": 3, "before_id": page1[-1]["id"]}).json()
    assert len(page1) == 3 and page2 and page2[0]["id"] < page1[-1]["id"]
    assert admin.get("/api/v1/audit", params={"since": "2020-01-01T00:00:00"}).status_code == 400


def test_admin_disabling_over_the_cli_service_revokes_too(portal: Portal) -> None:
    alice = _logged_in(portal, "alice")
    assert accounts.set_disabled(portal.svc, "alice", disabled=True) is True
    assert accounts.set_disabled(portal.svc, "alice", disabled=True) is False
    assert alice.get("/api/v1/me").status_code == 401
