"""A real webhook receiver on loopback: an HTTP server that records every POST (what Apprise's json://
and form:// channels send), and can hold its answers until the test lets them go (to show that an
action returns before its notification is delivered)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest


@dataclass
class Hook:
    path: str
    content_type: str
    body: dict[str, Any]
    status: int = 200  # what the receiver answered


@dataclass
class WebhookServer:
    port: int
    posts: list[Hook] = field(default_factory=list)
    status: int = 200
    release: threading.Event = field(default_factory=threading.Event)  # cleared: answers wait for it
    arrived: threading.Event = field(default_factory=threading.Event)  # set at the first post

    def url(self, scheme: str = "json", path: str = "/hook") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Hook]:
        return [p for p in self.posts if p.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30.0) -> list[Hook]:
        deadline = time.monotonic() + timeout
        while len(self.to(path)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.to(path)


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    box = WebhookServer(port=0)
    box.release.set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            kind = self.headers.get("Content-Type") or ""
            body = json.loads(raw) if "json" in kind else {k: v[0] for k, v in parse_qs(raw).items()}
            box.arrived.set()
            box.release.wait(timeout=60)
            box.posts.append(Hook(self.path, kind, body, box.status))
            self.send_response(box.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        box.release.set()
        server.shutdown()
        server.server_close()
