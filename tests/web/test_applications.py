"""Applying for an account: the visitor's form and API, validation, throttling, the admin's queue, mail."""

from __future__ import annotations

from fastapi.testclient import TestClient

from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _applications as applications
from labgpu.services.portal import _audit as audit
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.conftest import MailBox
from tests.web.conftest import PASSWORD, Portal, csrf_from, login, page_token
from tests.web.test_i18n import untranslated

GOOD = {
    "name": "newbie",
    "email": "newbie@lab.test",
    "password": "quiet-walnut-58-harbor",
    "confirm_password": "quiet-walnut-58-harbor",
    "supervisor": "Prof. Li",
    "group_name": "vision",
    "reason": "deep learning for my thesis",
}


def _apply(client: TestClient, **changes: str):  # type: ignore[no-untyped-def]
    token = csrf_from(client.get("/apply").text)
    return client.post("/apply", data={**GOOD, **changes, "csrf_token": token})


def test_a_visitor_applies_and_the_admins_are_mailed(portal: Portal, smtp_server: MailBox) -> None:
    settings = portal.settings.model_copy(update={**smtp_server.settings(), "smtp_port": smtp_server.port})
    app = create_app(settings)
    accounts.create_account(portal.svc, name="boss", password=PASSWORD, email="boss@lab.test")
    accounts.create_account(portal.svc, name="boss2", password=PASSWORD)  # no e-mail: not mailed
    with TestClient(app, client=("192.0.2.7", 40000)) as client:
        r = _apply(client)
        assert r.status_code == 200
        assert "Application received" in r.text and "newbie@lab.test" in r.text
    (row,) = applications.list_applications(portal.svc)
    assert (row.name, row.status, row.supervisor, row.source_address) == (
        "newbie",
        "pending",
        "Prof. Li",
        "192.0.2.7",
    )
    (mail,) = smtp_server.wait_for("boss@lab.test")  # notifications are delivered in the background
    assert "newbie" in mail["Subject"]
    body = mail.get_content()
    assert "deep learning for my thesis" in body and "/admin/applications" in body
    assert GOOD["password"] not in body
    event = audit.list_events(portal.svc, action="application.submit")[0]
    assert (event.actor, event.target, event.source_address) == ("anonymous", "newbie", "192.0.2.7")
    assert GOOD["password"] not in str(event.detail)


def test_bad_applications_are_refused_and_nothing_is_stored(portal: Portal) -> None:
    portal.add_account("taken")
    client = portal.client()
    assert _apply(client, name="taken").status_code == 409
    assert _apply(client, name="Bad_Name").status_code == 400
    assert _apply(client, name="root").status_code == 400
    assert _apply(client, email="not-an-address").status_code == 400
    r = _apply(client, password="password1", confirm_password="password1")
    assert r.status_code == 400 and "most common passwords" in r.text
    r = _apply(client, confirm_password="something-else-entirely")
    assert r.status_code == 400 and "The two passwords differ." in r.text
    assert 'value="Prof. Li"' in r.text  # the form keeps what was typed (never the password)
    assert GOOD["password"] not in r.text
    assert applications.list_applications(portal.svc) == []
    # A pending application holds its name.
    assert _apply(client).status_code == 200
    assert _apply(client, email="other@lab.test").status_code == 409
    r = portal.client().post("/api/v1/applications", json={**_api(GOOD), "email": "x@lab.test"})
    assert r.status_code == 409 and r.json()["error"]["reason"] == "conflict"


def _api(form: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in form.items() if k != "confirm_password"}


def test_applications_are_throttled_per_address(portal: Portal) -> None:
    limit = portal.settings.apply_max_per_hour
    client = portal.client("198.51.100.9")
    for i in range(limit):
        r = client.post("/api/v1/applications", json={**_api(GOOD), "name": f"user{i}"})
        assert r.status_code == 201, r.text
    r = client.post("/api/v1/applications", json={**_api(GOOD), "name": "one-more"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    page = _apply(client, name="form-too")
    assert page.status_code == 429 and "Too many applications" in page.text
    assert int(page.headers["retry-after"]) > 0
    # Another address is not affected.
    assert _apply(portal.client("198.51.100.10"), name="elsewhere").status_code == 200


def test_the_form_needs_its_csrf_token(portal: Portal) -> None:
    client = portal.client()
    client.get("/apply")
    assert client.post("/apply", data=GOOD).status_code == 403
    assert client.post("/apply", data={**GOOD, "csrf_token": "0" * 64}).status_code == 403
    assert applications.list_applications(portal.svc) == []


def test_admin_rejects_with_a_reason_and_the_applicant_is_mailed(
    portal: Portal, smtp_server: MailBox
) -> None:
    settings = portal.settings.model_copy(update={**smtp_server.settings(), "smtp_port": smtp_server.port})
    app = create_app(settings)
    portal.add_account("boss", role=Role.ADMIN)
    portal.add_account("carol")
    with TestClient(app, client=("192.0.2.8", 40000)) as visitor:
        assert _apply(visitor).status_code == 200
    (pending,) = applications.list_applications(portal.svc)
    with TestClient(app, client=("192.0.2.9", 40000)) as member:
        assert login(member, "carol").status_code == 303
        assert member.get("/admin/applications").status_code == 403
        assert member.get("/api/v1/applications").status_code == 403
        csrf = {"X-CSRF-Token": page_token(member, "/me")}
        r = member.post(f"/api/v1/applications/{pending.id}/reject", json={"reason": "x"}, headers=csrf)
        assert r.status_code == 403
    with TestClient(app, client=("192.0.2.10", 40000)) as admin:
        assert login(admin, "boss").status_code == 303
        page = admin.get("/admin/applications")
        assert page.status_code == 200 and "newbie" in page.text and "Prof. Li" in page.text
        token = csrf_from(page.text)
        r = admin.post(f"/admin/applications/{pending.id}/reject", data={"reason": " ", "csrf_token": token})
        assert r.status_code == 400
        r = admin.post(
            f"/admin/applications/{pending.id}/reject",
            data={"reason": "please ask your supervisor to write to us", "csrf_token": token},
        )
        assert r.status_code == 200 and "Rejected" in r.text
        again = admin.post(
            f"/api/v1/applications/{pending.id}/reject", json={"reason": "x"}, headers={"X-CSRF-Token": token}
        )
        assert again.status_code == 409
        assert admin.get(f"/api/v1/applications/{pending.id}").json()["status"] == "rejected"
    (mail,) = smtp_server.wait_for("newbie@lab.test")
    assert "not approved" in mail["Subject"]
    assert "please ask your supervisor to write to us" in mail.get_content()
    # The name is free again.
    assert _apply(portal.client("192.0.2.11")).status_code == 200


def test_pages_in_chinese(portal: Portal) -> None:
    portal.add_account("boss", role=Role.ADMIN)
    zh = {"Accept-Language": "zh-CN"}
    visitor = portal.client(headers=zh)
    pages = {"/apply": visitor.get("/apply")}
    token = csrf_from(pages["/apply"].text)
    pages["/apply (weak)"] = visitor.post(
        "/apply", data={**GOOD, "password": "password1", "confirm_password": "password1", "csrf_token": token}
    )
    pages["/apply (done)"] = visitor.post("/apply", data={**GOOD, "csrf_token": token})
    admin = portal.client("192.0.2.20", headers=zh)
    assert login(admin, "boss").status_code == 303
    for path in ("/admin/applications", "/admin/members", "/admin/members/boss", "/admin/containers",
                 "/admin/shares", "/admin/hosts", "/admin/audit"):  # fmt: skip
        pages[path] = admin.get(path)
    for name, response in pages.items():
        assert response.headers["content-language"] == "zh-Hans", name
        assert untranslated(response.text) == [], name
    assert "申请已收到" in pages["/apply (done)"].text
