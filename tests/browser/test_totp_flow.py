"""Two-factor log-in in a real browser, with codes computed by pyotp from the secret the page shows (what an
authenticator app does with the QR code): an admin of a lab that requires it is sent to set it up right
after the password, confirms a first code, gets ten recovery codes, and then logs in with a code and with
a recovery code. The pages in English and Chinese are saved as screenshots, the Chinese ones without an
untranslated string.

The portal runs in process under uvicorn on a free loopback port, on a real SQLite store; no LXD/Incus
daemon is needed."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest

from labgpu.services.portal import _accounts as accounts
from labgpu.settings import load_settings
from labgpu.store.migrate import upgrade
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.browser.conftest import log_in, screenshot, serve_app
from tests.web.conftest import PASSWORD, Portal
from tests.web.test_i18n import untranslated
from tests.web.test_totp import away_from_a_boundary


@pytest.fixture
def totp_site(tmp_path: Path) -> Iterator[str]:
    """The portal at http://127.0.0.1:PORT, with require_totp_for_admins; boss (admin) and alice."""
    settings = load_settings(
        state_dir=str(tmp_path / "state"),
        runtime_url=f"unix://{tmp_path}/no-daemon.sock",
        trusted_proxies="",
        jobs_in_serve=False,
        require_totp_for_admins=True,
    )
    upgrade(settings)
    app = create_app(settings, background=False)
    portal = Portal(app, settings)
    portal.add_account("boss", role=Role.ADMIN)
    accounts.create_account(portal.svc, name="alice", password=PASSWORD, role=Role.MEMBER)
    with serve_app(app) as url:
        yield url


def _password(page: Any, url: str, name: str, next_: str = "/me") -> None:
    log_in(page, url, name, next_path=next_, lands=None)  # a second factor is asked next


def _log_out(page: Any) -> None:
    page.click("form[action='/logout'] button[type=submit]")
    page.wait_for_url(re.compile(r".*/login$"))


def test_an_admin_sets_up_totp_then_logs_in_with_a_code_and_a_recovery_code(
    totp_site: str, browser: Any
) -> None:
    url = totp_site
    context = browser.new_context(locale="en-US")
    page = context.new_page()

    # The password alone: straight to setting up the second factor, before any admin page.
    _password(page, url, "boss", "/admin/applications")
    page.wait_for_url(url + "/account/totp?next=/admin/applications")
    assert "must log in with a second factor" in page.locator("#totp-due").inner_text()
    assert page.locator("header nav a[href='/admin/applications']").count() == 0
    page.goto(url + "/admin/members")
    page.wait_for_url(re.compile(r".*/account/totp\?next=/admin/members$"))

    page.click("#totp-setup")
    page.wait_for_selector("#totp-qr")
    assert page.locator("#totp-qr").evaluate("img => img.complete && img.naturalWidth > 100")
    secret = page.locator("#totp-secret").inner_text().replace(" ", "")
    totp = pyotp.TOTP(secret)
    screenshot(page, "en-totp-setup")
    page.fill("#confirm-code", "000000")
    page.click("form[action='/account/totp/confirm'] button[type=submit]")
    assert "not right" in page.locator(".error").inner_text()
    away_from_a_boundary()  # the code of the step before and the server's check fall in one window
    page.fill("#confirm-code", totp.at(time.time() - 30))
    page.click("form[action='/account/totp/confirm'] button[type=submit]")
    page.wait_for_selector("#recovery-codes")
    codes = page.locator("#codes").inner_text().split()
    assert len(codes) == 10 and all(re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", c) for c in codes)
    assert page.locator("#totp-state").inner_text() == "on"
    screenshot(page, "en-totp-recovery-codes")
    page.click("header nav a[href='/admin/applications']")  # the admin pages are open now
    page.wait_for_url(url + "/admin/applications")
    _log_out(page)

    # Password, then a code from the app.
    _password(page, url, "boss", "/admin/members")
    page.wait_for_url(url + "/login/totp?next=/admin/members")
    assert "Logging in as boss" in page.content()
    screenshot(page, "en-totp-login")
    away_from_a_boundary()
    page.fill("#code", totp.now())
    page.click("form[action='/login/totp'] button[type=submit]")
    page.wait_for_url(url + "/admin/members")
    _log_out(page)

    # Password, then a recovery code (phone lost): in, and told how many are left.
    _password(page, url, "boss")
    page.wait_for_url(re.compile(r".*/login/totp\?next=/me$"))
    page.fill("#code", codes[0])
    page.click("form[action='/login/totp'] button[type=submit]")
    page.wait_for_url(url + "/account/totp")
    assert page.locator("#codes-left").inner_text() == "9"
    _log_out(page)
    context.close()

    # The same pages in Chinese; a member sees no requirement and sets nothing up.
    zh = browser.new_context(locale="zh-CN")
    page_zh = zh.new_page()
    _password(page_zh, url, "boss")
    page_zh.wait_for_url(re.compile(r".*/login/totp\?next=/me$"))
    assert untranslated(page_zh.content()) == []
    screenshot(page_zh, "zh-totp-login")
    page_zh.fill("#code", codes[1])
    page_zh.click("form[action='/login/totp'] button[type=submit]")
    page_zh.wait_for_url(url + "/account/totp")
    assert untranslated(page_zh.content()) == []
    screenshot(page_zh, "zh-totp-account")
    zh.close()

    member = browser.new_context(locale="zh-CN").new_page()
    _password(member, url, "alice")
    member.wait_for_url(url + "/me")
    member.goto(url + "/account/totp")
    member.click("#totp-setup")
    member.wait_for_selector("#totp-qr")
    assert untranslated(member.content()) == []
    screenshot(member, "zh-totp-setup")
