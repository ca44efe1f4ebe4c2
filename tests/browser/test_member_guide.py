"""The member's guide in a real browser: from "My container" to the guide, its pages linked to each other, code
blocks styled by the portal's stylesheet (no inline style: the CSP allows none), the reader's own SSH port in
the examples, and the same page in Chinese after the language switch.

The portal runs in process under uvicorn on a free loopback port, on a real SQLite store; carol's container is
recorded there as `member add` leaves it. No LXD/Incus daemon is needed: the guide reads only the store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labgpu.settings import load_settings
from labgpu.store.migrate import upgrade
from labgpu.web.app import create_app
from tests.browser.conftest import log_in, screenshot, serve_app
from tests.web.conftest import Portal
from tests.web.test_member_guide import give_container


@pytest.fixture
def guide_site(tmp_path: Path) -> Iterator[str]:
    settings = load_settings(
        state_dir=str(tmp_path / "state"),
        runtime_url=f"unix://{tmp_path}/no-daemon.sock",
        trusted_proxies="",
        jobs_in_serve=False,
    )
    upgrade(settings)
    app = create_app(settings, background=False)
    portal = Portal(app, settings)
    portal.add_account("carol")
    give_container(portal, "carol", ssh_port=22017, address="gpu7.campus.test")
    with serve_app(app) as url:
        yield url


def test_a_member_opens_the_guide_from_my_container(guide_site: str, browser: Any) -> None:
    url = guide_site
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    problems: list[str] = []
    # A CSP violation or a failed script is a console error; a missing file is a response (the browser's
    # own /favicon.ico aside: the portal has none).
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    log_in(page, url, "carol")

    page.click("#guide-link a")
    page.wait_for_url(url + "/help")
    assert page.inner_text("#guide h1") == "Member's guide"
    page.click("#guide-contents a >> text=Connecting to your container")
    page.wait_for_url(url + "/help/connecting")
    assert "ssh -p 22017 ubuntu@gpu7.campus.test" in page.inner_text("#guide pre >> nth=0")
    assert "22017" in page.inner_text("#guide-values")
    pre = page.locator("#guide pre").first
    assert pre.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(238, 241, 245)"
    assert pre.evaluate("e => getComputedStyle(e).fontFamily").startswith("ui-monospace")
    screenshot(page, "en-help-connecting")
    # A link inside the page, to a heading of another page.
    page.click("#guide a[href='/help/first-login'] >> nth=0")
    page.wait_for_url(url + "/help/first-login")

    # The language switch keeps the page and shows the Chinese guide.
    page.goto(url + "/help/connecting")
    page.click("form.lang button[value=zh_Hans]")
    page.wait_for_selector("#guide h1 >> text=连接容器")
    assert page.url == url + "/help/connecting"
    assert "ssh -p 22017 ubuntu@gpu7.campus.test" in page.inner_text("#guide pre >> nth=0")
    page.click("#guide-contents a[href='/help']")
    page.wait_for_url(url + "/help")
    screenshot(page, "zh-help")
    assert problems == []  # no CSP violation, no failed script
    context.close()
