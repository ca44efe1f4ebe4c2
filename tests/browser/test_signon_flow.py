"""Signing on in a real browser (Debian's Chromium) against real servers: a directory (slapd, StartTLS)
through the log-in form, and the OIDC and CAS buttons through the test identity provider's own pages
(django-oidc-provider, django-cas-server). A first sign-on leads to the prefilled application; a group
rule lets an admin straight in; a wrong password and filter injections are refused; with the directory
down the page says so and the local admin still logs in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import ADMIN_PASSWORD, Served, screenshot
from tests.conftest import LabgpuEnv
from tests.servers.fixtures import IdpServer
from tests.servers.ldap import PEOPLE, LdapServer, running_slapd

pytestmark = pytest.mark.integration


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[tuple[LdapServer, ExitStack]]:
    """A slapd of this test's own (the test stops it to see the portal without its directory)."""
    with ExitStack() as stack:
        yield stack.enter_context(running_slapd(tmp_path / "slapd")), stack


@pytest.fixture
def signon_served(
    request: pytest.FixtureRequest,
    labgpu_env: LabgpuEnv,
    directory: tuple[LdapServer, ExitStack],
    idp_server: IdpServer,
) -> Served:
    labgpu_env.overrides.update(
        directory[0].settings(),
        oidc_providers=json.dumps([idp_server.oidc_provider()]),
        cas_url=idp_server.cas_url,
        signon_admin_groups="gpu-admins",
    )
    served: Served = request.getfixturevalue("served")
    idp_server.allow_redirect(served.url + "/login/oidc/idp/callback")
    return served


def _form_login(page: Any, url: str, name: str, password: str) -> None:
    page.goto(url + "/login")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("form[action='/login'] button[type=submit]")


# Sign-on does not depend on the runtime: one daemon is enough (and Incus is not in the LXD lane).
@pytest.mark.parametrize("daemon_kind", ["incus"], indirect=True)
def test_sign_on_with_the_directory_oidc_and_cas(
    signon_served: Served, browser: Any, directory: tuple[LdapServer, ExitStack]
) -> None:
    url = signon_served.url
    context = browser.new_context(locale="en-US")
    page = context.new_page()

    # alice's first log-in with her directory password: the application, filled in from the directory.
    _form_login(page, url, "alice", PEOPLE["alice"][2])
    page.wait_for_url(url + "/signon/apply")
    assert page.input_value("#name") == "alice"
    assert page.input_value("#email") == "alice@lab.test"
    assert page.locator("#signon-apply input[type=password]").count() == 0
    screenshot(page, "en-signon-apply")
    page.fill("#reason", "thesis experiments")
    page.click("#signon-apply button[type=submit]")
    assert "waits for an admin" in page.text_content("#signon-status")

    # A wrong password and filter injections in the name are refused like any wrong log-in.
    page = browser.new_context(locale="en-US").new_page()
    for name, password in (
        ("alice", "not-her-password"),
        ("*", PEOPLE["alice"][2]),
        ("*)(uid=*", PEOPLE["alice"][2]),
    ):
        _form_login(page, url, name, password)
        assert "wrong name or password" in page.text_content("[role=alert]")
        assert page.url == url + "/login"

    # bob is in gpu-admins: straight in, as an admin.
    page = browser.new_context(locale="en-US").new_page()
    _form_login(page, url, "bob", PEOPLE["bob"][2])
    page.wait_for_url(url + "/me")
    assert page.locator("a[href='/admin/applications']").count() == 1

    # The OIDC button: the provider's own log-in page, then back to the prefilled application.
    page = browser.new_context(locale="en-US").new_page()
    page.goto(url + "/login")
    page.click("#signon-oidc-idp")
    page.fill("#idp-username", "olivia")
    page.fill("#idp-password", "olivia-idp-pass-4")
    page.click("#idp-submit")
    page.wait_for_url(url + "/signon/apply")
    assert page.input_value("#name") == "olivia" and page.input_value("#email") == "olivia@idp.test"

    # The campus log-in button (CAS): the CAS server's page, then back.
    page = browser.new_context(locale="zh-CN").new_page()
    page.goto(url + "/login")
    page.click("#signon-cas")
    page.fill("input[name=username]", "casey")
    page.fill("input[name=password]", "casey-idp-pass-4")
    page.click("#login_form button[type=submit], #login_form input[type=submit]")
    page.wait_for_url(url + "/signon/apply")
    assert page.input_value("#name") == "casey" and page.input_value("#email") == "casey@idp.test"
    screenshot(page, "zh-signon-apply")

    # The directory goes down: a clear message for its users, and the local admin still gets in.
    directory[1].close()
    page = browser.new_context(locale="en-US").new_page()
    _form_login(page, url, "alice", PEOPLE["alice"][2])
    assert "cannot be reached" in page.text_content("[role=alert]")
    _form_login(page, url, "boss", ADMIN_PASSWORD)
    page.wait_for_url(url + "/me")
