#!/usr/bin/env python3
"""Benchmark: browser access through the portal, in real Chromium (Playwright on Debian's chromium).

jupyter_* (web apps, issue 16): JupyterLab's first page load (a fresh browser profile each round: nothing
cached) through the portal's apps origin vs straight to the container's port (a raw proxy device to
JupyterLab's loopback port, made for the benchmark and removed after it). Target ratio <= 1.2. Needs the
jupyter template (built or taken from the cache as tests/browser/test_jupyter_apps.py does).

    .venv/bin/python bench/browser.py jupyter --daemon incus --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint

SOCKETS = {"lxd": "/var/lib/lxd/unix.socket", "incus": "/var/lib/incus/unix.socket"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


# JupyterLab through the portal (issue 16) ------------------------------------------------------------


def jupyter_load(browser: Any, url: str, cookies: list[dict[str, Any]]) -> float:
    """Seconds from navigation to JupyterLab's launcher in a fresh context (cold cache)."""
    context = browser.new_context()
    if cookies:
        context.add_cookies(cookies)
    page = context.new_page()
    began = time.perf_counter()
    page.goto(url)
    page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
    took = time.perf_counter() - began
    context.close()
    return took


def jupyter_first_load(runtime: RuntimeClient, browser: Any, rounds: int) -> dict[str, float]:
    """Median first load through the portal and straight to the container's port, and their ratio."""
    import httpx
    from tests.browser.conftest import _free_port
    from tests.browser.test_jupyter_apps import MEMBER, _login_client, running_lab
    from tests.conftest import ensure_test_pool, ensure_test_profile

    pool = ensure_test_pool(runtime)
    profile = ensure_test_profile(runtime, pool)
    with (
        tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp,
        running_lab(runtime, profile, pool, Path(tmp)) as lab,
    ):
        client = httpx.Client(base_url=lab.url)
        token = _login_client(client, MEMBER)
        opened = client.post(f"/members/{MEMBER}/apps/jupyterlab/open", data={"csrf_token": token})
        entered = httpx.get(opened.headers["location"])
        cookie = entered.cookies["labgpu_app"]
        base = f"/m/{MEMBER}/jupyterlab/"
        portal_url = lab.apps_url + base + "lab"
        deadline = time.monotonic() + 120
        while (
            httpx.get(lab.apps_url + base + "api/status", cookies={"labgpu_app": cookie}).status_code != 200
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("JupyterLab did not start")
            time.sleep(1)
        direct_port = _free_port()
        device = {
            "type": "proxy",
            "listen": f"tcp:127.0.0.1:{direct_port}",
            "connect": "tcp:127.0.0.1:18888",
            "bind": "host",
        }
        runtime.instances.add_device(lab.container, "bench-direct", device)
        try:
            direct_url = f"http://127.0.0.1:{direct_port}{base}lab"
            cookies = [{"name": "labgpu_app", "value": cookie, "url": lab.apps_url + base}]
            jupyter_load(browser, portal_url, cookies)  # warm the server side once (both ways share it)
            through, straight = [], []
            for _ in range(rounds):
                through.append(jupyter_load(browser, portal_url, cookies))
                straight.append(jupyter_load(browser, direct_url, []))
        finally:
            runtime.instances.remove_device(lab.container, "bench-direct")
    portal_s, direct_s = statistics.median(through), statistics.median(straight)
    return {"portal_s": portal_s, "direct_s": direct_s, "ratio": portal_s / direct_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["jupyter"], default="jupyter")
    parser.add_argument("--daemon", choices=sorted(SOCKETS), default="incus")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    runtime = RuntimeClient(Endpoint.unix(Path(SOCKETS[args.daemon])), timeout=60)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
        try:
            result = jupyter_first_load(runtime, browser, args.rounds)
        finally:
            browser.close()
    print(
        f"{args.daemon}: JupyterLab first load through the portal {result['portal_s'] * 1000:.0f} ms, "
        f"straight to the container's port {result['direct_s'] * 1000:.0f} ms, ratio {result['ratio']:.2f} "
        f"(target <= 1.2; median of {args.rounds})"
    )


if __name__ == "__main__":
    main()
