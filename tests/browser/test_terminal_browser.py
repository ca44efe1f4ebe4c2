"""The terminal in a real browser (Debian's Chromium) against `labgpu serve` and a real LXD and Incus.

A member clicks Terminal on "My container": a shell of the container's user opens; what they type runs in the
container (checked from outside: the files it writes appear in the member's home folder on the host), the
window size follows the browser's window (`stty size`), Chinese typed in goes through; another member and a
visitor get nothing from the terminal's page or its WebSocket; a page served from another port of 127.0.0.1
cannot open the WebSocket with the member's cookies (the portal's own page can); logging out in another tab
ends the terminal's WebSocket at once. The terminal page is saved as screenshots, in English and Chinese."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _audit as audit
from labgpu.store.models import Role
from tests.browser.conftest import Served, screenshot
from tests.conftest import LabgpuEnv, unique_name
from tests.web.test_i18n import untranslated

pytestmark = pytest.mark.integration
PASSWORD = "plum-tractor-71-orbit"

# Opens the terminal's WebSocket from whatever page it runs in; says whether it opened.
TRY_SOCKET = """url => new Promise(done => {
  const socket = new WebSocket(url);
  socket.onopen = () => { socket.close(); done("open"); };
  socket.onclose = event => done("closed " + event.code);
  setTimeout(() => done("timeout"), 15000);
})"""


@pytest.fixture
def other_origin() -> Iterator[str]:
    """An empty page on another port of 127.0.0.1: another origin on the portal's host (a member's own app)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>elsewhere</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def _login(page: Any, url: str, name: str) -> None:
    page.goto(url + "/login")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(url + "/me")


def _wait_for_file(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} was not written")


def _type(page: Any, text: str) -> None:
    page.keyboard.type(text)
    page.keyboard.press("Enter")


def test_a_member_uses_the_terminal_in_the_browser(
    labgpu_env: LabgpuEnv, served: Served, browser: Any, other_origin: str
) -> None:
    url = served.url
    svc = labgpu_env.services()
    name, other = unique_name("tb"), unique_name("tc")
    add_member(svc, validate_request(svc, name=name, gpus="none"), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    accounts.create_account(svc, name=other, password=PASSWORD, role=Role.MEMBER)
    home = svc.settings.home_base / name
    ws_url = url.replace("http://", "ws://") + f"/terminal/{name}/ws"

    # The member opens the terminal from "My container" (a new tab).
    member = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 800})
    me = member.new_page()
    _login(me, url, name)
    with member.expect_page() as opened:
        me.click("#open-terminal")
    term = opened.value
    term.wait_for_selector("#terminal[data-state=open]")
    term.wait_for_function(
        "() => window.labgpuTerminal.term.buffer.active.getLine(0).translateToString().includes('$')"
    )
    assert term.evaluate("() => window.labgpuTerminal.socket.extensions") == ""  # keystrokes not deflated
    _type(term, f"echo from-browser-$(id -un)-$(pwd) > ~/{name}/typed")
    assert _wait_for_file(home / "typed") == "from-browser-ubuntu-/home/ubuntu\n"

    # The window size follows the browser's window.
    term.set_viewport_size({"width": 700, "height": 420})
    term.wait_for_function("() => window.labgpuTerminal.term.cols < 90")
    time.sleep(0.3)  # the resize message goes out after the fit
    rows, cols = term.evaluate("() => [window.labgpuTerminal.term.rows, window.labgpuTerminal.term.cols]")
    _type(term, f"stty size > ~/{name}/size")
    assert _wait_for_file(home / "size") == f"{rows} {cols}\n"
    _type(term, f"echo 你好，世界 > ~/{name}/zh")
    assert _wait_for_file(home / "zh") == "你好，世界\n"
    screenshot(term, "en-terminal")

    # Nobody else gets anything from the terminal's page or its WebSocket.
    bob = browser.new_context(locale="en-US")
    page = bob.new_page()
    _login(page, url, other)
    assert page.goto(url + f"/terminal/{name}").status == 404
    assert page.evaluate(TRY_SOCKET, ws_url).startswith("closed")
    visitor = browser.new_context(locale="en-US")
    page = visitor.new_page()
    page.goto(url + f"/terminal/{name}")
    assert page.url.startswith(url + "/login")
    assert page.evaluate(TRY_SOCKET, ws_url).startswith("closed")
    bob.close()
    visitor.close()

    # A page of another origin on the same host, in the member's own browser (their cookies), cannot open it;
    # the portal's own page can.
    elsewhere = member.new_page()
    elsewhere.goto(other_origin)
    assert elsewhere.evaluate(TRY_SOCKET, ws_url).startswith("closed")
    assert me.evaluate(TRY_SOCKET, ws_url) == "open"
    elsewhere.close()
    opens = audit.list_events(svc, action="member.terminal", limit=10)
    assert [e.actor for e in opens] == [name, name]  # the tab's and the portal page's control open

    # Logging out in the other tab ends the terminal's WebSocket at once.
    me.click("form[action='/logout'] button[type=submit]")
    term.wait_for_selector("#terminal[data-state=closed]", timeout=10_000)
    assert term.get_attribute("#terminal", "data-close-code") == "4001"
    assert "you are logged out" in term.evaluate(
        "() => { const b = window.labgpuTerminal.term.buffer.active; let s = '';"
        " for (let i = 0; i < b.length; i++) s += b.getLine(i).translateToString(); return s; }"
    )
    member.close()

    # The page in Chinese, nothing left untranslated.
    zh = browser.new_context(locale="zh-CN")
    page = zh.new_page()
    _login(page, url, name)
    page.goto(url + f"/terminal/{name}")
    page.wait_for_selector("#terminal[data-state=open]")
    assert 'lang="zh-Hans"' in page.content() and untranslated(page.content()) == []
    screenshot(page, "zh-terminal")
    zh.close()
