"""No-GPU mode through the portal without a daemon: who may switch whose container, and what a refusal leaves
behind (nothing: the row is put back). The switch itself on a real daemon is tests/integration/test_no_gpu.py
and tests/browser/test_selfservice_flow.py."""

from __future__ import annotations

from sqlalchemy import select

from labgpu.store.models import AuditEvent, Member, Role
from tests.web.conftest import Portal, login, page_token


def _give_container(portal: Portal, name: str) -> None:
    with portal.svc.session() as session:
        member = session.scalars(select(Member).where(Member.name == name)).one()
        member.container, member.uid = name, 71001


def _no_gpu(portal: Portal, name: str) -> bool:
    with portal.svc.session() as session:
        return bool(session.scalars(select(Member.no_gpu).where(Member.name == name)).one())


def test_the_api_refuses_others_and_a_daemon_refusal_changes_nothing(portal: Portal) -> None:
    portal.add_account("boss", role=Role.ADMIN)
    portal.add_account("alice")
    portal.add_account("bob")
    _give_container(portal, "alice")
    alice, bob, boss = (portal.client(f"192.0.2.{i}") for i in (31, 32, 33))
    for client, name in ((alice, "alice"), (bob, "bob"), (boss, "boss")):
        assert login(client, name).status_code == 303

    r = bob.post(
        "/api/v1/members/alice/no-gpu", json={"no_gpu": True}, headers={"X-CSRF-Token": page_token(bob)}
    )
    assert r.status_code == 404 and "no member named alice" in r.text
    r = bob.post(
        "/api/v1/members/bob/no-gpu", json={"no_gpu": True}, headers={"X-CSRF-Token": page_token(bob)}
    )
    assert r.status_code == 409 and r.json()["error"]["message"] == "bob has no container"
    r = alice.post(
        "/api/v1/members/alice/no-gpu", json={"no_gpu": "yes"}, headers={"X-CSRF-Token": page_token(alice)}
    )
    assert r.status_code == 422

    # No daemon answers here: the change is refused, the row is as before, and the log says so.
    r = alice.post(
        "/api/v1/members/alice/no-gpu", json={"no_gpu": True}, headers={"X-CSRF-Token": page_token(alice)}
    )
    assert r.status_code == 503, r.text
    assert "alice's container refused the change, so nothing was changed" in r.json()["error"]["message"]
    assert _no_gpu(portal, "alice") is False
    with portal.svc.session() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.target == "alice"))]
    assert actions[-2:] == ["member.no-gpu", "member.no-gpu.reverted"]

    # The admin's form on the member's page: the same refusal, shown on the page.
    token = page_token(boss, "/admin/members/alice")
    page = boss.post("/admin/members/alice/no-gpu", data={"no_gpu": "on", "csrf_token": token})
    assert page.status_code == 503 and "refused the change" in page.text
    assert 'id="gpus-off"' in page.text and _no_gpu(portal, "alice") is False
    # A member's own form has no name in it: it is always their own container.
    token = page_token(bob, "/me")
    page = bob.post("/me/no-gpu", data={"no_gpu": "on", "csrf_token": token})
    assert page.status_code == 409 and "bob has no container" in page.text


def test_the_admin_pages_show_a_container_in_no_gpu_mode(portal: Portal) -> None:
    portal.add_account("boss", role=Role.ADMIN)
    portal.add_account("alice")
    _give_container(portal, "alice")
    with portal.svc.session() as session:
        session.scalars(select(Member).where(Member.name == "alice")).one().no_gpu = True
    boss = portal.client("192.0.2.34")
    assert login(boss, "boss").status_code == 303
    listing = boss.get("/admin/members").text
    assert "none (no-GPU mode)" in listing
    page = boss.get("/admin/members/alice").text
    assert 'id="gpus-on"' in page and "The container runs without GPUs" in page
    assert 'name="csrf_token" value=""' not in page  # the card's form carries the page's token
