"""Helpers for the terminal tests: the portal served by uvicorn on a free loopback port (in a thread, the
app built by the test), a login through the form, and the terminal's WebSocket as a browser opens it."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from websockets.sync.client import ClientConnection, connect

from labgpu.cli.portal import portal_websocket_options

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot take signals
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """``app`` at http://127.0.0.1:PORT (uvicorn with its WebSocket support, as `labgpu serve` runs it)."""
    port = free_port()
    server = _Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **portal_websocket_options())
    )
    thread = threading.Thread(target=server.run, daemon=True, name="test-portal")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the portal did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def login(url: str, name: str, password: str) -> httpx.Client:
    """A client logged in through the form (its cookies are the browser's)."""
    client = httpx.Client(base_url=url, timeout=30)
    token = CSRF_RE.search(client.get("/login").text)
    assert token, "no csrf_token on the login form"
    r = client.post("/login", data={"name": name, "password": password, "csrf_token": token.group(1)})
    assert r.status_code == 303, r.text[:300]
    return client


def cookie_header(client: httpx.Client | None) -> dict[str, str]:
    if client is None:
        return {}
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}


def ws_url(url: str, name: str, **query: int) -> str:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    return url.replace("http://", "ws://") + f"/terminal/{name}/ws" + (f"?{q}" if q else "")


def open_ws(
    url: str, name: str, client: httpx.Client | None, *, origin: str | None = "same", **query: int
) -> ClientConnection:
    """The terminal's WebSocket, with the cookies of ``client`` and an Origin ("same": the portal's); like a
    browser, it offers permessage-deflate."""
    return connect(
        ws_url(url, name, **query),
        origin=(url if origin == "same" else origin),  # type: ignore[arg-type]
        additional_headers=cookie_header(client),
        open_timeout=30,
        compression="deflate",
    )


def read_until(ws: ClientConnection, needle: bytes, timeout: float = 30) -> bytes:
    """What the terminal shows until ``needle`` appears (AssertionError after ``timeout`` seconds)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{needle!r} did not appear; the terminal showed {seen[-500:]!r}")
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            continue
        seen += message if isinstance(message, bytes) else message.encode()
    return seen


def shells_left(runtime: Any, container: str, timeout: float = 20) -> list[str]:
    """The processes named ``runuser`` (a terminal's login shell) still in ``container`` once they are gone
    or ``timeout`` seconds have passed: a closed terminal's shell gets SIGHUP and ends, not at once."""
    deadline = time.monotonic() + timeout
    while True:
        names = runtime.instances.exec(container, ["ps", "-eo", "comm="]).stdout.split()
        left = [n for n in names if n == "runuser"]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
