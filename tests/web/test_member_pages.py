"""A member's own container in the portal, against a real LXD/Incus daemon."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._ssh import probe_address, wait_for_ssh
from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _audit as audit
from labgpu.web.app import create_app
from tests.conftest import LabgpuEnv, unique_name
from tests.web.conftest import PASSWORD, login, page_token
from tests.web.test_i18n import untranslated

pytestmark = pytest.mark.integration


def test_member_sees_their_container_and_powers_it_but_not_anothers(labgpu_env: LabgpuEnv) -> None:
    svc = labgpu_env.services()
    name, other = unique_name("wa"), unique_name("wb")
    sheet = add_member(svc, validate_request(svc, name=name))
    add_member(svc, validate_request(svc, name=other), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    runtime = svc.runtime

    with TestClient(create_app(svc.settings, services=svc), client=("192.0.2.50", 40000)) as client:
        assert login(client, name).status_code == 303
        page = client.get("/me")
        assert page.status_code == 200
        text = html.unescape(page.text)
        assert sheet.ssh_command() in text
        assert f"Port {sheet.ports['ssh']}" in text
        assert "Running" in text
        chinese = client.get("/me", headers={"Accept-Language": "zh-CN"})
        assert "运行中" in chinese.text
        assert untranslated(chinese.text) == []
        download = client.get("/me/ssh-config")
        assert download.text == sheet.ssh_config()
        assert "attachment" in download.headers["content-disposition"]
        # The address and port shown reach the container's sshd.
        wait_for_ssh(probe_address(sheet.address), sheet.ports["ssh"], timeout=60)

        # The page's buttons (htmx posts the same form).
        r = client.post(
            "/me/power",
            data={"action": "stop", "csrf_token": page_token(client, "/me")},
            headers={"HX-Request": "true"},
        )
        assert r.status_code == 200, r.text[-500:]
        assert "Your container was stopped." in r.text
        assert runtime.instances.state(name).status == "Stopped"
        # The API, as the member.
        csrf = {"X-CSRF-Token": page_token(client, "/me")}
        r = client.post(f"/api/v1/members/{name}/start", headers=csrf)
        assert r.status_code == 200 and r.json() == {"name": name, "status": "Running"}
        connection = client.get(f"/api/v1/members/{name}/connection").json()
        assert connection["ssh"]["command"] == sheet.ssh_command()

        # Another member's container: not found, and untouched.
        before = runtime.instances.state(other).status
        for action in ("stop", "restart"):
            assert client.post(f"/api/v1/members/{other}/{action}", headers=csrf).status_code == 404
        assert client.get(f"/api/v1/members/{other}").status_code == 404
        assert client.get(f"/api/v1/members/{other}/connection").status_code == 404
        assert runtime.instances.state(other).status == before

    events = audit.list_events(svc, target=name, action="member.")
    assert [(e.action, e.actor, e.source_address) for e in events[:2]] == [
        ("member.start", name, "192.0.2.50"),
        ("member.stop", name, "192.0.2.50"),
    ]
