"""Members' own templates in the portal and the API, on a real daemon: save from the page (the container as it
is now), the list with size and date, the quota's refusal, another member's 404s, reset to it (the saved
root filesystem comes back, the home stays), the reset form's choices, deletion; an admin sees every one."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.conftest import LabgpuEnv, unique_name
from tests.web.conftest import PASSWORD, csrf_from, login

pytestmark = pytest.mark.integration


def test_my_templates_save_list_reset_and_delete(labgpu_env: LabgpuEnv) -> None:
    env, runtime = labgpu_env, labgpu_env.runtime
    env.overrides["member_template_quota"] = "1"
    svc = env.services()
    name, other = unique_name("mt"), unique_name("mo")
    sheet = add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    accounts.create_account(svc, name=other, email=None, password=PASSWORD, role=Role.MEMBER)
    accounts.create_account(svc, name="boss", email=None, password=PASSWORD, role=Role.ADMIN)
    runtime.instances.exec(name, ["sh", "-c", "echo mine > /opt/mine.txt"])
    (Path(sheet.home) / "data.txt").write_text("home\n")
    alias = f"member/{name}/env1"

    app = create_app(svc.settings, services=svc, background=False)
    with TestClient(app, client=("192.0.2.80", 1)) as c, TestClient(app, client=("192.0.2.81", 1)) as o:
        assert login(c, name).status_code == 303
        page = c.get("/me/templates")
        assert page.status_code == 200 and "No templates of your own yet." in page.text
        token = csrf_from(page.text)
        r = c.post("/me/templates", data={"label": "env1", "snapshot": "", "csrf_token": token})
        assert r.status_code == 200, html.unescape(r.text)[-600:]
        text = html.unescape(r.text)
        assert f"Your container was saved as the template {alias}." in text
        assert "Saved: 1 of 1 templates" in text and alias in text
        assert runtime.images.resolve_alias(alias) is not None
        # The quota: a second one is refused with the reason, on the page and in the API.
        r = c.post("/me/templates", data={"label": "env2", "csrf_token": token})
        assert r.status_code == 409 and "template quota reached" in html.unescape(r.text)
        csrf = {"X-CSRF-Token": token}
        r = c.post(f"/api/v1/members/{name}/templates", json={"label": "env2"}, headers=csrf)
        assert r.status_code == 409 and r.json()["error"]["reason"] == "exhausted"
        listed = c.get(f"/api/v1/members/{name}/templates").json()
        assert [t["alias"] for t in listed] == [alias] and listed[0]["size_bytes"] > 0

        # Another member sees nothing of it: 404 as for nobody, and cannot reset to it.
        assert login(o, other).status_code == 303
        otoken = csrf_from(o.get("/me").text)
        assert o.get(f"/api/v1/members/{name}/templates").status_code == 404
        r = o.delete(f"/api/v1/members/{name}/templates/env1", headers={"X-CSRF-Token": otoken})
        assert r.status_code == 404 and f"no member named {name}" in r.text
        assert o.post("/me/templates/delete", data={"label": "env1", "csrf_token": otoken}).status_code == 404
        assert runtime.images.resolve_alias(alias) is not None
        r = o.get("/me/templates")
        assert alias not in r.text

        # The /me reset form offers the member's own template; a lab template there is refused.
        me = c.get("/me").text
        assert f'<option value="{alias}">' in me
        r = c.post("/me/reset", data={"confirm": name, "template": "some-lab-template", "csrf_token": token})
        assert r.status_code == 400
        # Reset to it from the templates page: the saved root filesystem comes back, the home is kept.
        runtime.instances.exec(name, ["sh", "-c", "rm /opt/mine.txt"])
        r = c.post("/me/templates/reset", data={"label": "env1", "confirm": "nope", "csrf_token": token})
        assert r.status_code == 400 and "type your name" in r.text
        r = c.post("/me/templates/reset", data={"label": "env1", "confirm": name, "csrf_token": token})
        assert r.status_code == 200, html.unescape(r.text)[-600:]
        assert "Your container was rebuilt from your template" in html.unescape(r.text)
        assert runtime.instances.pull_file(name, "/opt/mine.txt") == b"mine\n"
        assert (Path(sheet.home) / "data.txt").read_text() == "home\n"
        assert "in use" in c.get("/me/templates").text

        # An admin sees every member's.
        with TestClient(app, client=("192.0.2.82", 1)) as a:
            assert login(a, "boss").status_code == 303
            assert [t["alias"] for t in a.get("/api/v1/member-templates").json()] == [alias]
            admin_page = a.get("/admin/templates")
            assert admin_page.status_code == 200 and f'data-alias="{alias}"' in admin_page.text
            form = {"owner": name, "label": "nothing", "csrf_token": csrf_from(admin_page.text)}
            r = a.post("/admin/member-templates/delete", data=form)
            assert r.status_code == 404 and "has no template named nothing" in r.text
            assert o.get("/api/v1/member-templates").status_code == 403

        # Deleted: the image goes, the container made from it keeps running.
        r = c.post("/me/templates/delete", data={"label": "env1", "csrf_token": token})
        assert r.status_code == 200 and "The template was deleted." in r.text
        assert runtime.images.resolve_alias(alias) is None
        assert runtime.instances.state(name).status == "Running"
        assert c.get(f"/api/v1/members/{name}/templates").json() == []
