"""Members' own templates in a real browser (Debian's Chromium) against `labgpu serve` and a real LXD and
Incus: from "My container" a member opens My templates, saves their container as it is now, sees it listed
with its size and date and offered by the reset form; in Chinese the page has no untranslated string, and the
member deletes the template there. The pages are saved as screenshots, in English and Chinese."""

from __future__ import annotations

from typing import Any

import pytest

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from tests.browser.conftest import Served, screenshot
from tests.conftest import LabgpuEnv, unique_name
from tests.web.test_i18n import untranslated

pytestmark = pytest.mark.integration
PASSWORD = "plum-tractor-71-orbit"
PUBLISH_MS = 600_000  # publishing a container's root filesystem takes a while on a loaded machine


def _login(page: Any, url: str, name: str) -> None:
    page.goto(url + "/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(url + "/me")


def test_a_member_saves_lists_and_deletes_a_template_of_their_own(
    labgpu_env: LabgpuEnv, served: Served, browser: Any
) -> None:
    url, runtime = served.url, labgpu_env.runtime
    svc = labgpu_env.services()
    name = unique_name("bt")
    add_member(svc, validate_request(svc, name=name, gpus="none"), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    alias = f"member/{name}/tools"

    member = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 900})
    page = member.new_page()
    page.set_default_timeout(PUBLISH_MS)
    _login(page, url, name)
    page.click("#my-templates-link")
    page.wait_for_url(url + "/me/templates")
    assert "No templates of your own yet." in page.inner_text("#my-templates")
    page.fill("#template-label", "tools")
    page.fill("#template-description", "my tools")
    page.select_option("#template-snapshot", "")  # my container as it is now
    page.click("#save-template-button")
    page.wait_for_selector("#my-templates-table tr[data-label=tools]")
    assert f"Your container was saved as the template {alias}." in page.inner_text(".notice")
    row = page.inner_text("#my-templates-table tr[data-label=tools]")
    assert alias in row and "my tools" in row and "MiB" in row
    assert "Saved: 1 of 2 templates" in page.inner_text("#template-quota")
    assert runtime.images.resolve_alias(alias) is not None
    screenshot(page, "en-my-templates")
    # The reset form on My container offers it.
    page.goto(url + "/me")
    assert page.locator(f"#reset-template option[value='{alias}']").count() == 1
    member.close()

    zh = browser.new_context(locale="zh-CN", viewport={"width": 1200, "height": 900})
    page_zh = zh.new_page()
    page_zh.set_default_timeout(PUBLISH_MS)
    _login(page_zh, url, name)
    page_zh.goto(url + "/me/templates")
    assert untranslated(page_zh.content()) == []
    assert "我的模板" in page_zh.inner_text("h1")
    screenshot(page_zh, "zh-my-templates")
    page_zh.click("#my-templates-table tr[data-label=tools] form[action='/me/templates/delete'] button")
    page_zh.wait_for_selector(".notice")
    assert "模板已删除" in page_zh.inner_text(".notice")
    assert page_zh.locator("#my-templates-table").count() == 0
    assert untranslated(page_zh.content()) == []
    screenshot(page_zh, "zh-my-templates-deleted")
    zh.close()
    assert runtime.images.resolve_alias(alias) is None
