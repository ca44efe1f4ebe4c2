"""A member's self-service on their own container, on a real daemon: SSH keys, snapshots, a first-login
password, reset with a typed confirmation; and an admin's limits, disable and removal."""

from __future__ import annotations

import html

import pytest
from fastapi.testclient import TestClient

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._listing import get_member
from labgpu.services.members._ssh import wait_for_ssh
from labgpu.services.portal import _accounts as accounts
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.sshutil import make_key, ssh_key, ssh_password
from tests.web.conftest import PASSWORD, csrf_from, login, page_token

pytestmark = pytest.mark.integration


def test_member_keys_snapshots_password_and_reset(labgpu_env: LabgpuEnv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    svc = labgpu_env.services()
    name = unique_name("ms")
    sheet = add_member(svc, validate_request(svc, name=name))
    accounts.set_password(svc, name=name, password=PASSWORD)
    key = make_key(tmp_path)
    port = sheet.ports["ssh"]

    with TestClient(create_app(svc.settings, services=svc, background=False), client=("192.0.2.70", 1)) as c:
        assert login(c, name).status_code == 303
        page = c.get("/me")
        assert "Up for" in page.text and "Memory in use" in page.text
        token = csrf_from(page.text)
        # An SSH key added on the page works at once, without a terminal: the admin-known initial password
        # nobody used is dropped (expired, it would stop key logins).
        assert sheet.initial_password
        r = c.post("/me/keys", data={"key": (key.with_suffix(".pub")).read_text(), "csrf_token": token})
        assert r.status_code == 200 and "The SSH key was added." in r.text
        result = ssh_key(key, port, "echo hello")
        assert result.stdout.strip() == "hello", result.stderr
        # Snapshots: take, list, restore (the root filesystem goes back; the home stays).
        csrf = {"X-CSRF-Token": token}
        assert ssh_key(key, port, "touch /home/ubuntu/before-snapshot").returncode == 0
        r = c.post(f"/api/v1/members/{name}/snapshots", json={"name": "clean"}, headers=csrf)
        assert r.status_code == 201, r.text
        assert ssh_key(key, port, "touch /home/ubuntu/after-snapshot").returncode == 0
        r = c.post("/me/snapshots/restore", data={"snapshot": "clean", "csrf_token": token})
        assert r.status_code == 200 and "restored" in r.text, r.text[-400:]
        assert [s["name"] for s in c.get(f"/api/v1/members/{name}/snapshots").json()] == ["clean"]
        wait_for_ssh("127.0.0.1", port, timeout=60)
        assert ssh_key(key, port, "ls /home/ubuntu/after-snapshot").returncode != 0
        assert ssh_key(key, port, "ls /home/ubuntu/before-snapshot").returncode == 0
        # The container's password, chosen by the member: refused when weak or mistyped, then works at once.
        form = {"password": "Fresh-Start-4417", "confirm_password": "Fresh-Start-4418", "csrf_token": token}
        assert c.post("/me/container-password", data=form).status_code == 400
        weak = {"password": "password", "confirm_password": "password", "csrf_token": token}
        assert c.post("/me/container-password", data=weak).status_code == 400
        form["confirm_password"] = form["password"]
        r = c.post("/me/container-password", data=form)
        assert r.status_code == 200 and "password was set" in r.text
        assert "Fresh-Start-4417" not in r.text
        assert ssh_password("Fresh-Start-4417", port, "id -un").stdout.strip() == "ubuntu"
        # An admin-known password for a member with a key is refused (it would stop the key's logins).
        r = c.post(f"/api/v1/members/{name}/initial-password", headers=csrf)
        assert r.status_code == 409 and "SSH key" in r.json()["error"]["message"]
        # Reset needs the name typed again.
        r = c.post("/me/reset", data={"confirm": "nope", "csrf_token": token})
        assert r.status_code == 400 and "type your name" in r.text
        r = c.post(f"/api/v1/members/{name}/reset", json={"confirm": name, "template": "x"}, headers=csrf)
        assert r.status_code == 403  # another template: admins only
        r = c.post("/me/reset", data={"confirm": name, "csrf_token": token})
        assert r.status_code == 200, html.unescape(r.text)[-500:]
        assert 'id="new-password"' not in r.text  # a member with a key gets no admin-known password
        assert (
            ssh_key(key, port, "ls /home/ubuntu/before-snapshot").returncode != 0
        )  # rebuilt from the template
        assert ssh_key(key, port, "echo back").stdout.strip() == "back"  # keys kept


def test_admin_changes_limits_disables_and_removes_a_member(labgpu_env: LabgpuEnv) -> None:
    svc = labgpu_env.services()
    name = unique_name("mr")
    add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    accounts.create_account(svc, name="boss", password=PASSWORD, role=Role.ADMIN)
    with TestClient(create_app(svc.settings, services=svc, background=False), client=("192.0.2.71", 1)) as c:
        assert login(c, "boss").status_code == 303
        page = c.get("/admin/containers")
        assert name in page.text
        assert name in c.get("/admin/members", params={"q": name[:4]}).text
        token = csrf_from(c.get(f"/admin/members/{name}").text)
        r = c.post(
            f"/admin/members/{name}/limits",
            data={"cpu": "1", "memory": "300MiB", "gpus": "none", "csrf_token": token},
        )
        assert r.status_code == 200 and "Changed" in r.text, r.text[-400:]
        inst = svc.runtime.instances.get(name)
        assert (inst.config.get("limits.cpu"), inst.config.get("limits.memory")) == ("1", "300MiB")
        r = c.post(f"/admin/members/{name}/disable", data={"csrf_token": token})
        assert r.status_code == 200 and accounts.get_account(svc, name).disabled
        r = c.post(f"/admin/members/{name}/remove", data={"confirm": "wrong", "csrf_token": token})
        assert r.status_code == 400
        assert get_member(svc, name).status == "Running"
        csrf = {"X-CSRF-Token": token}
        r = c.delete(f"/api/v1/members/{name}", params={"confirm": name}, headers=csrf)
        assert r.status_code == 200, r.text
        removal = r.json()
        assert removal["container_deleted"] and not removal["purged"] and removal["archived_to"]
        assert c.get(f"/api/v1/members/{name}").status_code == 404
        assert name not in [i.name for i in svc.runtime.instances.all(with_state=False)]
    # The home folder was kept (archived), as the page said.
    from pathlib import Path

    assert Path(removal["archived_to"]).is_dir()
    ts = [
        e.action
        for e in __import__("labgpu.services.portal._audit", fromlist=["x"]).list_events(svc, target=name)
    ]
    assert {"member.set", "account.disable", "member.rm"} <= set(ts)
    _ = page_token
