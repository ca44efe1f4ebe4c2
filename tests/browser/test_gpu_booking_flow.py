"""The GPU pages in a real browser: a member sees who uses which GPU, books a GPU on the bookings board (the
form, with htmx and without) and sees the booking on the board; the pages in English and Chinese are saved as
screenshots, the Chinese ones without an untranslated string.

The portal runs in process under uvicorn on a free loopback port, on a real SQLite store, with the GPUs of a
REAL `labgpu agent` (replaying a recorded NVML reading) on another port. No LXD/Incus daemon is needed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import log_in, screenshot, serve_gpu_site
from tests.web.test_i18n import untranslated


@pytest.fixture
def gpu_site(tmp_path: Path) -> Iterator[str]:
    """The portal with host gpu1 (booked mode, its agent), alice, bob and boss."""
    with serve_gpu_site(tmp_path, members=("alice", "bob"), admins=("boss",)) as url:
        yield url


def test_a_member_books_a_gpu_on_the_board_and_sees_it(gpu_site: str, browser: Any) -> None:
    url = gpu_site
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    log_in(page, url, "alice")

    page.click("header nav a[href='/gpus']")
    page.wait_for_url(url + "/gpus")
    gpu0 = page.locator("#gpu-gpu1-0")
    assert "alice" in gpu0.inner_text() and "bob" in gpu0.inner_text()
    assert "Xorg" in page.locator("#gpu-gpu1-1").inner_text()
    screenshot(page, "en-gpus")

    page.click("header nav a[href='/bookings']")
    page.wait_for_url(url + "/bookings")
    assert page.locator("#board-gpu1-2 td.held").count() == 0
    page.check("input[name=gpu][value='2']")
    page.fill("#until", "+3h")
    page.fill("#note", "thesis experiments")
    page.click("#book-button")  # htmx swaps the page in place
    page.wait_for_selector("#board-gpu1-2 td.held.mine")
    assert "was made: GPU 2 on gpu1" in page.locator(".notice").inner_text()
    held = page.locator("#board-gpu1-2 td.held.mine")
    assert "alice" in held.inner_text()
    assert "thesis experiments" in page.locator("#my-bookings").inner_text()
    screenshot(page, "en-bookings")

    # Without JavaScript the same form works as a plain POST; a clash is one sentence on the form.
    plain = browser.new_context(locale="en-US", java_script_enabled=False)
    bob = plain.new_page()
    log_in(bob, url, "bob")
    bob.goto(url + "/bookings")
    assert "alice" in bob.locator("#board-gpu1-2").inner_text()
    bob.check("input[name=gpu][value='2']")
    bob.fill("#until", "+1h")
    bob.click("#book-button")
    assert bob.locator("#form-error").inner_text().startswith("GPU 2 is booked by alice from ")
    bob.uncheck("input[name=gpu][value='2']")
    bob.check("input[name=gpu][value='3']")
    bob.click("#book-button")
    bob.wait_for_selector("#board-gpu1-3 td.held.mine")
    assert "bob" in bob.locator("#board-gpu1-3").inner_text()
    plain.close()

    # The same pages in Chinese.
    zh = browser.new_context(locale="zh-CN")
    page_zh = zh.new_page()
    log_in(page_zh, url, "alice")
    for path, name in (("/gpus", "zh-gpus"), ("/bookings", "zh-bookings")):
        page_zh.goto(url + path)
        assert untranslated(page_zh.content()) == [], path
        screenshot(page_zh, name)
    zh.close()
    context.close()
