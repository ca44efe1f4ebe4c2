"""Full-screen programs in the browser terminal (real Chromium, `labgpu serve`, a real Incus): vim, htop and tmux
in a container made from the tools test image (the ssh image plus python3, vim, htop and tmux).

What a member would notice: vim opens, takes typed text (Chinese included) and saves it (the file appears in
the home folder on the host); htop draws its header (read from xterm's buffer); tmux splits the window, and
when the browser window is resized the pane's `stty size` follows it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from tests.browser.conftest import Served, screenshot
from tests.conftest import LabgpuEnv, unique_name

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("daemon_kind", ["incus"], indirect=True)]
PASSWORD = "plum-tractor-71-orbit"
SCREEN = """() => { const b = window.labgpuTerminal.term.buffer.active; const lines = [];
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
  return lines.join("\\n"); }"""
SIZE = "() => [window.labgpuTerminal.term.rows, window.labgpuTerminal.term.cols]"


def _wait_for_file(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.1)
    raise AssertionError(f"{path} was not written")


def _screen_has(term: Any, text: str, timeout: float = 20_000) -> None:
    term.wait_for_function(f"text => ({SCREEN})().includes(text)", arg=text, timeout=timeout)


def _type(term: Any, text: str) -> None:
    term.keyboard.type(text)
    term.keyboard.press("Enter")


def test_vim_htop_and_tmux_in_the_browser_terminal(
    labgpu_env: LabgpuEnv, tools_image: str, served: Served, browser: Any
) -> None:
    url = served.url
    svc = labgpu_env.services()
    name = unique_name("tp")
    add_member(svc, validate_request(svc, name=name, gpus="none", template=tools_image), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    home = svc.settings.home_base / name

    context = browser.new_context(locale="en-US", viewport={"width": 1200, "height": 800})
    term = context.new_page()
    term.goto(url + "/login")
    term.fill("#name", name)
    term.fill("#password", PASSWORD)
    term.click("form[action='/login'] button[type=submit]")
    term.wait_for_url(url + "/me")
    term.goto(url + f"/terminal/{name}")
    term.wait_for_selector("#terminal[data-state=open]")
    _screen_has(term, "$")

    # vim: insert text, save, quit; the file is in the home on the host.
    _type(term, f"vim.tiny ~/{name}/notes.txt")
    _screen_has(term, "notes.txt")
    term.keyboard.press("i")
    term.keyboard.type("typed in vim 你好")
    term.keyboard.press("Escape")
    _type(term, ":wq")
    assert _wait_for_file(home / "notes.txt") == "typed in vim 你好\n"

    # htop: its header is drawn (CPU meter, tasks, load average), then q quits.
    _type(term, "htop")
    _screen_has(term, "Load average")
    screen = term.evaluate(SCREEN)
    assert "Tasks:" in screen and "Uptime" in screen
    screenshot(term, "en-terminal-htop")
    term.keyboard.press("q")
    term.wait_for_function(f"() => !({SCREEN})().includes('Load average')")

    # tmux: a split (two panes one above the other, each the full width); the pane follows a resize.
    _type(term, "tmux")
    _screen_has(term, "[0]")  # the status line
    term.keyboard.press("Control+b")
    term.keyboard.type('"')
    time.sleep(0.5)  # the new pane's shell starts
    _type(term, f"stty size > ~/{name}/pane-before")
    rows, cols = term.evaluate(SIZE)
    pane_rows, pane_cols = (int(x) for x in _wait_for_file(home / "pane-before").split())
    assert pane_cols == cols and pane_rows < rows // 2 + 1
    screenshot(term, "en-terminal-tmux")
    term.set_viewport_size({"width": 760, "height": 520})
    term.wait_for_function(f"() => window.labgpuTerminal.term.cols < {cols}")
    time.sleep(0.5)  # the resize goes out after the fit, and tmux redraws
    new_rows, new_cols = term.evaluate(SIZE)
    _type(term, f"stty size > ~/{name}/pane-after")
    after_rows, after_cols = (int(x) for x in _wait_for_file(home / "pane-after").split())
    assert after_cols == new_cols < cols and after_rows < new_rows // 2 + 1 and after_rows < pane_rows
    term.keyboard.press("Control+b")
    _type(term, ":kill-server")
    context.close()
