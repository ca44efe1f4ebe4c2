#!/usr/bin/env python3
"""Benchmark: an app reached through the exec relay (apps in containers on other hosts) vs through a proxy
device's unix socket (the local host's way), in the same run, against the same app in the same container.

The app: a small HTTP/1.1 server (keep-alive) on the container's loopback, in a container made from the tools
test image (python3 inside). Measured from the portal's side, as the apps origin talks to either socket:

- new connection: a fresh connection and one GET (what a browser's first requests cost; the relay starts an
  exec of the forwarder through the daemon for each);
- kept-alive GET: one more GET on an open connection (what most of an app's requests cost: the apps origin
  keeps relayed connections for 120 s);
- download: a 64 MiB answer, MiB/s.

The relay goes through the daemon's unix socket here; over HTTPS (a remote host) each new connection also
pays the TLS handshakes of its four WebSockets.

    .venv/bin/python bench/apps_relay.py --daemon incus --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import httpx

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.apps import AppRelays, Relay

SOCKETS = {"lxd": "/var/lib/lxd/unix.socket", "incus": "/var/lib/incus/unix.socket"}
PORT = 18555
BIG = 64 * 1024 * 1024
SERVER = r"""
import http.server, socketserver, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        size = 64 * 1024 * 1024 if self.path == "/big" else 2
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b"x" * min(size, 1 << 20)
        while size:
            self.wfile.write(block[:size])
            size -= min(size, len(block))
    def log_message(self, *a):
        pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _prepare(runtime: RuntimeClient, image: str, profile: str, name: str) -> None:
    runtime.instances.create(name, image=image, profiles=[profile], start=True)
    deadline = time.monotonic() + 120
    while runtime.instances.exec(name, ["systemctl", "is-system-running"]).stdout.strip() not in (
        "running",
        "degraded",
    ):
        if time.monotonic() > deadline:
            raise SystemExit("systemd in the container did not come up")
        time.sleep(1)
    runtime.instances.push_file(name, "/opt/bench-server.py", SERVER.encode())
    started = runtime.instances.exec(
        name, ["systemd-run", "--unit=bench-http", "python3", "/opt/bench-server.py", str(PORT)]
    )
    if not started.ok:
        raise SystemExit(f"the app did not start: {started.stderr}")


async def _measure(socket: Path, rounds: int) -> dict[str, float]:
    url = "http://app/"
    fresh = []
    for _ in range(rounds):
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket))) as client:
            began = time.perf_counter()
            answer = await client.get(url)
            fresh.append(time.perf_counter() - began)
            assert answer.status_code == 200
    kept = []
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(socket))) as client:
        await client.get(url)
        for _ in range(rounds):
            began = time.perf_counter()
            answer = await client.get(url)
            kept.append(time.perf_counter() - began)
        began = time.perf_counter()
        size = 0
        async with client.stream("GET", url + "big") as stream:
            async for chunk in stream.aiter_raw():
                size += len(chunk)
        seconds = time.perf_counter() - began
        assert size == BIG
    return {
        "new connection (ms)": statistics.median(fresh) * 1000,
        "kept-alive GET (ms)": statistics.median(kept) * 1000,
        "download (MiB/s)": BIG / (1 << 20) / seconds,
    }


async def _run(runtime: RuntimeClient, name: str, folder: Path, rounds: int) -> None:
    raw = folder / "raw.sock"
    runtime.instances.add_device(
        name,
        "bench-raw",
        {"type": "proxy", "listen": f"unix:{raw}", "connect": f"tcp:127.0.0.1:{PORT}", "bind": "host"},
    )
    relays = AppRelays()
    relayed = folder / "relay.sock"
    await relays.ensure(relayed, Relay(runtime=runtime, container=name, port=PORT, where="bench"))
    try:
        results = {"proxy device (raw)": await _measure(raw, rounds)}
        results["exec relay"] = await _measure(relayed, rounds)
    finally:
        await relays.close()
    keys = list(next(iter(results.values())))
    print(f"{'':22}" + "".join(f"{k:>22}" for k in keys))
    for way, values in results.items():
        print(f"{way:22}" + "".join(f"{values[k]:>22.1f}" for k in keys))
    print(f"relayed connections opened: {relays.opened}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--daemon", choices=sorted(SOCKETS), default="incus")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--image", default="labgpu-test-tools", help="an image with python3 and systemd")
    parser.add_argument(
        "--profile", default="labgpu-test", help="a profile with a root disk (the tests' own)"
    )
    args = parser.parse_args()
    runtime = RuntimeClient(Endpoint.unix(SOCKETS[args.daemon]), timeout=60, operation_timeout=300)
    if args.image == "labgpu-test-tools":
        from tests.conftest import _ensure_test_image

        _ensure_test_image(runtime, "tools")
    name = f"bench-relay-{secrets.token_hex(3)}"
    folder = Path("/tmp") / f"lgbr-{secrets.token_hex(3)}"
    folder.mkdir(mode=0o700)
    try:
        _prepare(runtime, args.image, args.profile, name)
        asyncio.run(_run(runtime, name, folder, args.rounds))
    finally:
        with contextlib.suppress(Exception):
            runtime.instances.stop(name, force=True)
        with contextlib.suppress(Exception):
            runtime.instances.delete(name)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
