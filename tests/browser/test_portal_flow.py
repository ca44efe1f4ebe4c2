"""The whole portal in a real browser: apply -> an admin approves -> the applicant gets the mail -> logs
in -> sees the connection sheet -> a real `ssh` with the command shown reaches the container. Then the main
pages in English and Chinese, saved as screenshots; the Chinese ones without an untranslated string."""

from __future__ import annotations

import shlex
import time
from typing import Any

import pytest

from tests.browser.conftest import ADMIN_PASSWORD, Served, screenshot
from tests.conftest import MailBox, unique_name
from tests.integration.sshutil import ssh_password
from tests.web.test_i18n import untranslated

pytestmark = pytest.mark.integration
APPLICANT_PASSWORD = "quiet-walnut-58-harbor"
NEW_CONTAINER_PASSWORD = "Lantern-Moss-9274"


def _login(page: Any, url: str, name: str, password: str) -> None:
    page.goto(url + "/login")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(url + "/me")


def _wait_for_mail(box: MailBox, address: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = box.to(address)
        if found:
            return found[-1]
        time.sleep(0.2)
    raise AssertionError(f"no mail to {address}")


def test_apply_approve_mail_login_and_ssh(served: Served, browser: Any, smtp_server: MailBox) -> None:
    url = served.url
    name = unique_name("br")
    email = f"{name}@lab.test"
    lang = {"en": "en-US", "zh": "zh-CN"}

    # A visitor applies.
    visitor = browser.new_context(locale=lang["en"])
    page = visitor.new_page()
    page.goto(url + "/login")
    screenshot(page, "en-login")
    page.click("a[href='/apply']")
    page.fill("#name", name)
    page.fill("#email", email)
    page.fill("#password", APPLICANT_PASSWORD)
    page.fill("#confirm_password", APPLICANT_PASSWORD)
    page.fill("#supervisor", "Prof. Wang")
    page.fill("#group_name", "Vision group")
    page.fill("#reason", "Training detection models for my thesis.")
    screenshot(page, "en-apply")
    page.click("form[action='/apply'] button[type=submit]")
    page.wait_for_selector("text=Application received")
    assert email in page.content()
    assert _wait_for_mail(smtp_server, "boss@lab.test")["Subject"].endswith(name)
    visitor.close()

    # The admin approves with a CPU limit; the queue shows the progress until done.
    admin = browser.new_context(locale=lang["en"])
    page = admin.new_page()
    _login(page, url, "boss", ADMIN_PASSWORD)
    page.goto(url + "/admin/applications")
    row = page.locator("tr", has_text=name).first
    row.locator("summary").click()
    row.locator("input[name=cpu]").fill("1")
    screenshot(page, "en-admin-applications")
    row.locator("form.approve button[type=submit]").click()
    page.wait_for_selector("text=is being made")
    status = page.locator("td[id^=status-]").first
    status.locator(".badge.done").wait_for(timeout=300_000)  # htmx polls the status cell
    screenshot(page, "en-admin-applications-done")
    page.goto(url + "/admin/containers")
    assert name in page.content()
    screenshot(page, "en-admin-containers")
    page.goto(url + "/admin/audit")
    assert "application.approve" in page.content()
    screenshot(page, "en-audit")

    # The applicant gets the mail, logs in and sees the connection sheet.
    mail = _wait_for_mail(smtp_server, email)
    body = mail.get_content()
    assert url + "/login" in body
    member = browser.new_context(locale=lang["en"])
    page = member.new_page()
    _login(page, url, name, APPLICANT_PASSWORD)
    command = page.inner_text("#ssh-command").strip()
    assert command in body  # the mail and the page show the same command
    # The member chooses the container's password on the page (nobody else ever knows it); it works at once.
    page.fill("#container-password-new", NEW_CONTAINER_PASSWORD)
    page.fill("#container-password-confirm", NEW_CONTAINER_PASSWORD)
    page.click("#set-container-password")
    assert "password was set" in page.content()
    assert NEW_CONTAINER_PASSWORD not in page.content()
    screenshot(page, "en-me")
    member.close()

    # A real ssh with the command shown and that password.
    args = shlex.split(command)
    assert args[0] == "ssh" and args[1] == "-p"
    port, (user, host) = int(args[2]), args[3].split("@", 1)
    result = ssh_password(NEW_CONTAINER_PASSWORD, port, "id -un; hostname", user=user, host=host)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [user, name]

    # The main pages in Chinese: nothing left untranslated.
    zh = browser.new_context(locale=lang["zh"])
    page = zh.new_page()
    pages = {}
    page.goto(url + "/login")
    pages["zh-login"] = page.content()
    screenshot(page, "zh-login")
    page.goto(url + "/apply")
    pages["zh-apply"] = page.content()
    screenshot(page, "zh-apply")
    _login(page, url, name, APPLICANT_PASSWORD)
    pages["zh-me"] = page.content()
    screenshot(page, "zh-me")
    page.goto(url + "/account")
    pages["zh-account"] = page.content()
    zh.clear_cookies()
    _login(page, url, "boss", ADMIN_PASSWORD)
    for path, shot in (
        ("/admin/applications", "zh-admin-applications"),
        ("/admin/containers", "zh-admin-containers"),
        ("/admin/audit", "zh-audit"),
        ("/admin/members", "zh-admin-members"),
    ):
        page.goto(url + path)
        pages[shot] = page.content()
        screenshot(page, shot)
    for shot, content in pages.items():
        assert 'lang="zh-Hans"' in content, shot
        assert untranslated(content) == [], shot
    zh.close()
    admin.close()
