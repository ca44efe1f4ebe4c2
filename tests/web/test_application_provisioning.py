"""An approved application becomes a member with a container, on a real LXD/Incus daemon: provisioned in
the background with visible progress, resumed after a restart, the applicant mailed (never a password)."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from labgpu.services.members._listing import get_member
from labgpu.services.portal import _applications as applications
from labgpu.services.portal._accounts import get_account
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.conftest import LabgpuEnv, MailBox, unique_name
from tests.web.conftest import PASSWORD, login, page_token

pytestmark = pytest.mark.integration
APPLICANT_PASSWORD = "quiet-walnut-58-harbor"


def test_approve_provisions_in_the_background_and_resumes_after_a_restart(
    labgpu_env: LabgpuEnv, smtp_server: MailBox
) -> None:
    labgpu_env.overrides.update(smtp_server.settings(), portal_url="https://gpu.lab.test/")
    svc = labgpu_env.services()
    from labgpu.services.portal import _accounts as accounts

    accounts.create_account(svc, name="boss", password=PASSWORD, role=Role.ADMIN, email="boss@lab.test")
    name = unique_name("ap")

    # The first portal takes the application and the approval but provisions nothing (as if it died).
    with TestClient(create_app(svc.settings, services=svc, background=False), client=("192.0.2.60", 1)) as c:
        r = c.post(
            "/api/v1/applications",
            json={"name": name, "email": f"{name}@lab.test", "password": APPLICANT_PASSWORD, "reason": "x"},
        )
        assert r.status_code == 201, r.text
        app_id = r.json()["id"]
        assert smtp_server.wait_for("boss@lab.test"), "the admins were mailed"
        assert login(c, "boss").status_code == 303
        csrf = {"X-CSRF-Token": page_token(c, "/admin/applications")}
        r = c.post(
            f"/api/v1/applications/{app_id}/approve",
            json={"cpu": 1, "memory": "512MiB", "template": "", "gpus": "none"},
            headers=csrf,
        )
        assert r.status_code == 200, r.text
        assert (r.json()["status"], r.json()["progress"]) == ("approved", "queued")
        assert r.json()["decided_by"] == "boss"

    # The next portal resumes it at start-up; the admin's page polls its progress.
    app = create_app(svc.settings, services=svc)
    with TestClient(app, client=("192.0.2.61", 1)) as admin:
        assert login(admin, "boss").status_code == 303
        seen = set()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            cell = admin.get(f"/admin/applications/{app_id}/progress").text
            info = applications.get_application(svc, app_id)
            seen.add(info.progress)
            if info.status in ("done", "failed"):
                break
            assert 'hx-trigger="every 2s"' in cell
            time.sleep(0.5)
        assert info.status == "done", info.progress
        assert "hx-trigger" not in admin.get(f"/admin/applications/{app_id}/progress").text
    assert seen & {"creating the container", "waiting for sshd", "creating the portal account", "done"}

    member = get_member(svc, name)
    assert (member.status, member.cpu, member.memory_bytes, member.gpus) == (
        "Running",
        1,
        512 * 1024**2,
        "none",
    )
    assert member.email == f"{name}@lab.test"
    account = get_account(svc, name)
    assert account.has_password and account.role == "member"
    # The applicant logs in with the password they chose (its hash moved; the application keeps none).
    with TestClient(create_app(svc.settings, services=svc, background=False), client=("192.0.2.62", 1)) as me:
        assert login(me, name, APPLICANT_PASSWORD).status_code == 303
        page = me.get("/me")
        sheet = get_member(svc, name, live=False)
        assert f"-p {sheet.ports['ssh']}" in page.text
    from sqlalchemy import select

    from labgpu.store.models import Application

    with svc.session() as session:
        assert (
            session.scalars(select(Application.password_hash).where(Application.id == app_id)).one() is None
        )

    (mail,) = smtp_server.wait_for(f"{name}@lab.test")
    body = mail.get_content()
    assert "ready" in mail["Subject"]
    assert "https://gpu.lab.test/login" in body
    assert f"ssh -p {sheet.ports['ssh']} ubuntu@" in body
    assert APPLICANT_PASSWORD not in body and "password:" not in body.lower()
