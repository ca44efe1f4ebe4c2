"""Two-factor log-in (TOTP) through the portal's forms, as a browser sends them: setting it up with the
secret the page shows (codes computed by pyotp, as an authenticator app does), logging in with a code and
with a recovery code, replayed and wrong codes, the throttle, a pending log-in that is not a session, and
require_totp_for_admins sending an admin without it to set it up before any admin power.

Codes are real RFC 6238 codes of the current time; a sequence that needs several steps takes those around
now (the server accepts one step either side) and starts away from a step's boundary."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from labgpu.services.portal import _audit as audit
from labgpu.services.portal import _totp as totp
from labgpu.services.portal import _totp_enrol as enrol
from labgpu.services.portal._accounts import Identity
from labgpu.store.models import Member, PendingLogin, Role, TotpCredential, TotpRecoveryCode, utcnow
from labgpu.web.app import create_app
from tests.web.conftest import Portal, csrf_from, login, page_token

SECRET_RE = re.compile(r'<pre id="totp-secret" class="token">([A-Z2-7 ]+)</pre>')
CODES_RE = re.compile(r"\b([a-z2-9]{5}-[a-z2-9]{5})\b")


def away_from_a_boundary() -> None:
    """Wait, if need be, until the current 30-second step has at least 5 seconds left."""
    left = totp.STEP_SECONDS - time.time() % totp.STEP_SECONDS
    if left < 5:
        time.sleep(left + 0.1)


def code(secret: str, steps: int = 0) -> str:
    """The code an authenticator shows ``steps`` steps from now."""
    return pyotp.TOTP(secret).at(time.time() + steps * totp.STEP_SECONDS)


def enable_totp(portal: Portal, name: str) -> str:
    """Set TOTP up for ``name`` through the services (the first code one step back); returns the secret.
    The current step and the next one are then still unused."""
    away_from_a_boundary()
    identity = _identity(portal, name)
    setup = enrol.start_totp_setup(portal.svc, identity)
    enrol.confirm_totp(portal.svc, identity, code=code(setup.secret, -1), source_address=None)
    return setup.secret


def enrol_through_the_page(client: TestClient, *, steps: int = -1) -> tuple[str, list[str]]:
    """Set TOTP up on /account/totp: the page's secret, a first code (``steps`` from now). Returns the
    secret and the recovery codes the page shows once."""
    page = client.get("/account/totp")
    assert page.status_code == 200 and "totp-setup" in page.text
    started = client.post("/account/totp/setup", data={"csrf_token": csrf_from(page.text)})
    assert started.status_code == 200, started.text[:300]
    assert 'src="data:image/svg+xml' in started.text  # the QR code, drawn on the server
    secret = SECRET_RE.search(started.text)
    assert secret, "the secret is shown as text too"
    key = secret.group(1).replace(" ", "")
    confirmed = client.post(
        "/account/totp/confirm", data={"code": code(key, steps), "csrf_token": csrf_from(started.text)}
    )
    assert confirmed.status_code == 200, confirmed.text[:300]
    codes = CODES_RE.findall(confirmed.text)
    assert len(codes) == totp.RECOVERY_CODES == len(set(codes))
    return key, codes


def second_step(client: TestClient, typed: str, next_: str = "/me") -> object:
    page = client.get(f"/login/totp?next={next_}")
    assert page.status_code == 200, page.text[:300]
    return client.post(
        "/login/totp",
        data={"code": typed, "next": next_, "csrf_token": csrf_from(page.text)},
        follow_redirects=False,
    )


def test_set_up_then_log_in_with_a_code_and_with_a_recovery_code(portal: Portal) -> None:
    away_from_a_boundary()
    portal.add_account("alice")
    alice = portal.client("192.0.2.80")
    assert login(alice, "alice").status_code == 303

    # A wrong first code turns nothing on.
    started = alice.post("/account/totp/setup", data={"csrf_token": page_token(alice)})
    wrong = alice.post(
        "/account/totp/confirm", data={"code": "000000", "csrf_token": csrf_from(started.text)}
    )
    assert wrong.status_code == 401 and "not right" in wrong.text
    assert not enrol.totp_status(portal.svc, _identity(portal, "alice")).enabled

    secret, codes = enrol_through_the_page(alice)
    with portal.svc.session() as s:
        hashes = s.scalars(select(TotpRecoveryCode.code_hash)).all()
    assert len(hashes) == 10 and all(h.startswith("$argon2id$") for h in hashes)
    assert not any(c.replace("-", "") in h for c in codes for h in hashes)

    # The password alone gives a pending log-in, not a session.
    browser = portal.client("192.0.2.81")
    r = login(browser, "alice", next="/gpus")
    assert r.status_code == 303 and r.headers["location"] == "/login/totp?next=/gpus"
    assert "labgpu_session" not in browser.cookies and "labgpu_pending" in browser.cookies
    assert browser.get("/api/v1/me").status_code == 401
    assert browser.get("/me", follow_redirects=False).headers["location"].startswith("/login?next=")

    done = second_step(browser, code(secret, 0), "/gpus")
    assert done.status_code == 303 and done.headers["location"] == "/gpus"  # type: ignore[attr-defined]
    assert browser.get("/api/v1/me").json()["name"] == "alice"

    # The same code again (replayed by someone who saw it): refused, inside its window.
    thief = portal.client("192.0.2.82")
    assert login(thief, "alice").status_code == 303
    replayed = second_step(thief, code(secret, 0))
    assert replayed.status_code == 401 and "not right" in replayed.text  # type: ignore[attr-defined]
    assert thief.get("/api/v1/me").status_code == 401

    # A recovery code logs in once, and leads to the page that says how many are left.
    used = second_step(thief, codes[3].upper().replace("-", " "))
    assert used.status_code == 303 and used.headers["location"] == "/account/totp"  # type: ignore[attr-defined]
    assert '<dd id="codes-left">9</dd>' in thief.get("/account/totp").text
    again = portal.client("192.0.2.83")
    assert login(again, "alice").status_code == 303
    assert second_step(again, codes[3]).status_code == 401  # type: ignore[attr-defined]

    actions = [e.action for e in audit.list_events(portal.svc, limit=100) if e.target == "alice"]
    assert {"account.totp.setup", "account.totp.enable", "account.login.password"} <= set(actions)
    logins = [
        e for e in audit.list_events(portal.svc, action="account.login", limit=100) if e.target == "alice"
    ]
    assert {e.detail.get("second_factor") for e in logins if e.detail} >= {"totp", "recovery-code"}


def test_wrong_codes_are_throttled_and_end_the_pending_login(portal: Portal) -> None:
    portal.add_account("bob")
    bob = portal.client("192.0.2.84")
    assert login(bob, "bob").status_code == 303
    enrol_through_the_page(bob, steps=0)

    attacker = portal.client("192.0.2.85")
    assert login(attacker, "bob").status_code == 303
    for _ in range(totp.PENDING_MAX_FAILURES - 1):
        assert second_step(attacker, "123456").status_code == 401  # type: ignore[attr-defined]
    last = attacker.post("/login/totp", data={"code": "654321", "csrf_token": page_token(attacker, "/login")})
    assert last.status_code == 401 and 'action="/login"' in last.text  # back to the password form
    assert attacker.get("/login/totp", follow_redirects=False).headers["location"] == "/login"
    # The wrong codes counted as failed logins: the right password now meets the throttle.
    throttled = login(attacker, "bob")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"]
    # An expired pending log-in opens nothing either.
    with portal.svc.session() as s:
        s.execute(update(PendingLogin).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert attacker.get("/api/v1/me").status_code == 401


def test_an_admin_without_totp_is_sent_to_set_it_up_when_it_is_required(portal: Portal) -> None:
    away_from_a_boundary()
    settings = portal.settings.model_copy(update={"require_totp_for_admins": True})
    required = Portal(create_app(settings), settings)
    with TestClient(required.app):  # its lifespan disposes of its engine at the end
        _admin_is_sent_to_set_it_up(required)


def _admin_is_sent_to_set_it_up(required: Portal) -> None:
    required.add_account("boss", role=Role.ADMIN)
    required.add_account("alice")
    boss = required.client("192.0.2.86")
    r = login(boss, "boss", next="/admin/members")
    assert r.status_code == 303 and r.headers["location"] == "/account/totp?next=/admin/members"
    # Until it is set up, no admin power: pages lead to the set-up, the API says why, another member's
    # objects are as hidden as for any member.
    r = boss.get("/admin/applications", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/account/totp?next=")
    api = boss.get("/api/v1/members")
    assert api.status_code == 403 and api.json()["error"]["reason"] == "totp-enrolment-required"
    assert boss.get("/api/v1/members/alice").status_code == 404
    assert "Admins of this lab must log in with a second factor" in boss.get("/account/totp").text
    assert ">Admin<" not in boss.get("/account/totp").text
    # API tokens are not affected.
    token = boss.post("/api/v1/tokens", json={"name": "ci"}, headers={"X-CSRF-Token": page_token(boss)})
    assert token.status_code == 201
    bearer = required.client("192.0.2.87", headers={"Authorization": f"Bearer {token.json()['token']}"})
    assert bearer.get("/api/v1/members").status_code == 200

    secret, _ = enrol_through_the_page(boss, steps=-1)
    assert boss.get("/admin/applications").status_code == 200
    assert boss.get("/api/v1/members").status_code == 200
    # Required: it cannot be turned off, only replaced.
    off = boss.post("/account/totp/disable", data={"code": code(secret, 0), "csrf_token": page_token(boss)})
    assert off.status_code == 409
    assert enrol.totp_status(required.svc, _identity(required, "boss")).enabled

    # The next log-in asks for the code, then goes where it was going.
    again = required.client("192.0.2.88")
    assert login(again, "boss", next="/admin/members").headers["location"].startswith("/login/totp")
    done = second_step(again, code(secret, 0), "/admin/members")
    assert done.headers["location"] == "/admin/members"  # type: ignore[attr-defined]
    assert again.get("/admin/members").status_code == 200

    # Locked out (phone lost, no recovery codes): the CLI's reset, then set it up again.
    assert enrol.reset_totp(required.svc, "boss") is True
    third = required.client("192.0.2.89")
    assert login(third, "boss").headers["location"].startswith("/account/totp")
    assert audit.list_events(required.svc, action="account.totp.reset", limit=5)[0].target == "boss"


def test_a_member_may_turn_it_on_and_off(portal: Portal) -> None:
    away_from_a_boundary()
    portal.add_account("carol")
    carol = portal.client("192.0.2.90")
    assert login(carol, "carol").status_code == 303
    secret, codes = enrol_through_the_page(carol, steps=-1)
    renewed = carol.post(
        "/account/totp/recovery-codes", data={"code": code(secret, 0), "csrf_token": page_token(carol)}
    )
    fresh = CODES_RE.findall(renewed.text)
    assert renewed.status_code == 200 and len(fresh) == 10 and not set(fresh) & set(codes)
    off = carol.post("/account/totp/disable", data={"code": fresh[0], "csrf_token": page_token(carol)})
    assert off.status_code == 200 and "Two-factor log-in is off." in off.text
    with portal.svc.session() as s:
        assert s.scalars(select(TotpCredential)).all() == []
    assert login(portal.client("192.0.2.91"), "carol").headers["location"] == "/me"


def _identity(portal: Portal, name: str) -> Identity:
    with portal.svc.session() as s:
        member = s.scalars(select(Member).where(Member.name == name)).one()
        return Identity(member.id, name, str(member.role), "session")
