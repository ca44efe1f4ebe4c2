#!/usr/bin/env python3
"""Benchmark: browser access through the portal, against going to the container directly, in the same run.

Terminal part (``terminal_*``): one member container (the offline-built SSH test image) on a real LXD or
Incus, and `labgpu serve` as a subprocess on a free loopback port (as in production: its own process, so its
memory and CPU can be read from /proc).

- keystroke round trip: one character typed into the terminal's WebSocket until the pty's echo of it comes
  back, against the same through `ssh -tt` to the same container's SSH port (median and p95 of R rounds,
  and their ratio; targets: ratio <= 1.5, under 10 ms on loopback), and straight on the daemon's exec
  WebSockets without the portal (the floor of any bridge). The three ways take turns key by key and are
  read alike (a blocking read in one thread; the WebSocket clients offer permessage-deflate as Chromium
  does), and the load average is reported beside them: on a shared machine it moves every figure;
- 50 idle terminals open at once: the portal's resident memory before and with them, and its CPU use while
  they sit idle.

    .venv/bin/python bench/browser.py --daemon lxd
    .venv/bin/python bench/browser.py --daemon incus --rounds 500 --idle 50 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.list_instances import SOCKETS

PASSWORD = "bench-browser-password-5731"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]


# The terminal ---------------------------------------------------------------------------------------------


@dataclass
class TerminalLab:
    """A member with a running container, and the portal serving it."""

    url: str
    name: str
    ssh_port: int
    key: Path
    portal_pid: int
    cookie: str
    daemon: str = "lxd"
    cleanup: list[Any] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def terminal_lab(daemon: str, *, max_open: int) -> Iterator[TerminalLab]:
    """Make the member and start the portal; remove both afterwards."""
    from tests.conftest import _ensure_test_image, ensure_test_pool, ensure_test_profile

    from labgpu.runtime.client import RuntimeClient
    from labgpu.runtime.endpoint import Endpoint
    from labgpu.services.context import Actor, Services
    from labgpu.services.members import add_member, validate_request
    from labgpu.services.portal import set_password
    from labgpu.settings import load_settings
    from labgpu.store.db import create_engine_for, session_factory
    from labgpu.store.migrate import upgrade

    runtime = RuntimeClient(Endpoint.unix(Path(SOCKETS[daemon])), timeout=30, operation_timeout=300)
    image = _ensure_test_image(runtime, "ssh")
    pool = ensure_test_pool(runtime)
    profile = ensure_test_profile(runtime, pool)
    work = Path(tempfile.mkdtemp(prefix="labgpu-bench-browser-"))
    start = 20000 + secrets.randbelow(100) * 100
    overrides = {
        "state_dir": str(work / "state"),
        "home_base": str(work / "home"),
        "home_archive": str(work / "archive"),
        "runtime_url": f"unix://{SOCKETS[daemon]}",
        "listen_address": "127.0.0.1",
        "port_range_start": str(start),
        "port_range_end": str(start + 99),
        "default_template": image,
        "profile_name": profile,
        "storage_pool": pool,
        "trusted_proxies": "",
        "jobs_in_serve": "false",
        "terminal_max_open": str(max_open),
        "terminal_opens_per_minute": str(max_open * 2),
    }
    settings = load_settings(**overrides)
    engine = create_engine_for(settings)
    upgrade(settings, engine=engine)
    svc = Services(settings=settings, runtime=runtime, sessions=session_factory(engine), actor=Actor("bench"))
    name = f"bb-{secrets.token_hex(3)}"
    key = work / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    request = validate_request(
        svc, name=name, gpus="none", ssh_keys=[key.with_suffix(".pub").read_text().strip()]
    )
    sheet = add_member(svc, request, wait_ssh=True)
    portal: subprocess.Popen[bytes] | None = None
    try:
        # The first-login password change would stop a key login too: the bench member has done it.
        runtime.instances.exec(name, ["chage", "-d", time.strftime("%Y-%m-%d"), settings.container_user])
        set_password(svc, name=name, password=PASSWORD)
        port, apps_port = _free_port(), _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
        env.update({f"LABGPU_{k.upper()}": v for k, v in overrides.items()})
        log = (work / "serve.log").open("w")
        # The apps origin on a free port too: another serve may hold the setting's default.
        serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--apps-port", str(apps_port)]
        portal = subprocess.Popen(
            [sys.executable, "-m", "labgpu.cli", *serve],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        cookie = _login(url, name, portal)
        yield TerminalLab(
            url=url,
            name=name,
            ssh_port=sheet.ssh_port,
            key=key,
            portal_pid=portal.pid,
            cookie=cookie,
            daemon=daemon,
        )
    finally:
        if portal is not None:
            portal.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                portal.wait(timeout=20)
        with contextlib.suppress(Exception):
            runtime.instances.stop(name, force=True)
        with contextlib.suppress(Exception):
            runtime.instances.delete(name)
        engine.dispose()
        runtime.close()
        shutil.rmtree(work, ignore_errors=True)


def _login(url: str, name: str, portal: subprocess.Popen[bytes]) -> str:
    import re

    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/healthz", timeout=2)
            break
        except httpx.HTTPError:
            if portal.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("labgpu serve did not start") from None
            time.sleep(0.2)
    with httpx.Client(base_url=url) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
        assert token is not None
        client.post("/login", data={"name": name, "password": PASSWORD, "csrf_token": token.group(1)})
        return f"labgpu_session={client.cookies['labgpu_session']}"


# Keystrokes: three ways into the same shell, timed alike ----------------------------------------------

WARMUP = 20  # rounds typed before the timed ones


class _Way(Protocol):
    """A way to type into a shell of the container and read its echo, in this thread."""

    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes: ...

    def close(self) -> None: ...


class _WebSocketWay:
    """A WebSocket client read the way the ``ssh -tt`` pipe is read: a blocking socket and select() in this
    thread, with the ``websockets`` package's Sans-I/O protocol (no event loop and no reader thread: either
    would add a hand-off of its own to every echo that the ssh side does not have). It offers
    permessage-deflate as Chromium does; the server decides (``extensions``: what it agreed to)."""

    def __init__(
        self,
        sock: socket.socket,
        url: str,
        *,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
        from websockets.protocol import State
        from websockets.uri import parse_uri

        self._sock = sock
        self._events: deque[Any] = deque()
        self._protocol = ClientProtocol(
            parse_uri(url),
            origin=origin,  # type: ignore[arg-type]
            extensions=[ClientPerMessageDeflateFactory(client_max_window_bits=True)],
            max_size=None,
        )
        request = self._protocol.connect()
        request.headers.update(headers or {})
        self._protocol.send_request(request)
        self._flush()
        while self._protocol.state is State.CONNECTING:
            self._feed(30)
        if self._protocol.state is not State.OPEN:
            raise RuntimeError(f"WebSocket refused: {self._protocol.handshake_exc}")
        response = self._events.popleft()
        self.extensions = response.headers.get("Sec-WebSocket-Extensions")

    def _flush(self) -> None:
        self._sock.sendall(b"".join(self._protocol.data_to_send()))  # pongs and close replies too

    def _feed(self, timeout: float) -> None:
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            raise TimeoutError
        data = self._sock.recv(65536)
        if data:
            self._protocol.receive_data(data)
        else:
            self._protocol.receive_eof()
        self._flush()
        self._events.extend(self._protocol.events_received())
        if not data and not self._events:
            raise EOFError("the WebSocket closed")

    def send(self, data: bytes) -> None:
        self._protocol.send_binary(data)
        self._flush()

    def recv(self, timeout: float) -> bytes:
        from websockets.frames import Frame, Opcode

        deadline = time.monotonic() + timeout
        while True:
            while self._events:
                event = self._events.popleft()
                if isinstance(event, Frame) and event.opcode in (Opcode.BINARY, Opcode.TEXT, Opcode.CONT):
                    return bytes(event.data)
                if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                    raise EOFError("the WebSocket closed")
            self._feed(max(0.0, deadline - time.monotonic()))  # pings come without data

    def close(self) -> None:
        self._sock.close()


class _SshWay:
    """``ssh -tt`` to the container's SSH port, read through its pipe."""

    def __init__(self, lab: TerminalLab) -> None:
        self._proc = subprocess.Popen(
            ["ssh", "-tt", *SSH_OPTS, "-i", str(lab.key), "-p", str(lab.ssh_port), "ubuntu@127.0.0.1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin, self._fd = self._proc.stdin, self._proc.stdout.fileno()

    def send(self, data: bytes) -> None:
        self._stdin.write(data)

    def recv(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self._fd], [], [], timeout)
        if not ready:
            raise TimeoutError
        return os.read(self._fd, 65536)

    def close(self) -> None:
        self._proc.kill()
        self._proc.wait()


def _tcp(url: str) -> socket.socket:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as browsers do
    return sock


def terminal_open(lab: TerminalLab) -> _WebSocketWay:
    """One terminal's WebSocket, opened as the portal's page opens it; returns once the prompt is there."""
    way = _WebSocketWay(
        _tcp(lab.url),
        lab.url.replace("http://", "ws://") + f"/terminal/{lab.name}/ws?cols=120&rows=40",
        origin=lab.url,
        headers={"Cookie": lab.cookie},
    )
    _read_until(way.recv, b"$ ")
    return way


@contextlib.contextmanager
def _daemon_direct(lab: TerminalLab) -> Iterator[_WebSocketWay]:
    """The shell straight on the daemon's exec WebSockets (no portal): the floor of any bridge."""
    from concurrent.futures import ThreadPoolExecutor

    from labgpu.runtime.client import RuntimeClient
    from labgpu.runtime.endpoint import Endpoint
    from labgpu.runtime.terminal import exec_websocket_path, start_interactive
    from labgpu.services.members._terminal import TERMINAL_ENV, terminal_command

    with RuntimeClient(Endpoint.unix(Path(SOCKETS[lab.daemon]))) as client:
        started = start_interactive(
            client, lab.name, terminal_command("ubuntu"), environment=dict(TERMINAL_ENV), cols=120, rows=40
        )

    def one(secret: str) -> _WebSocketWay:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(SOCKETS[lab.daemon])
        return _WebSocketWay(sock, "ws://runtime" + exec_websocket_path(started, secret))

    # Both at once: the daemon starts the shell once both are connected.
    with ThreadPoolExecutor(max_workers=2) as pool:
        data, control = pool.map(one, [started.data_secret, started.control_secret])
    try:
        yield data
    finally:
        data.close()
        control.close()


def _read_until(recv: Callable[[float], bytes], needle: bytes, timeout: float = 30) -> None:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        seen += recv(max(0.01, deadline - time.monotonic()))
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} did not come: {seen[-200:]!r}")


def _drain(way: _Way, wait: float = 0.02) -> None:
    with contextlib.suppress(TimeoutError):
        while True:
            way.recv(wait)


def _keystroke(way: _Way) -> float:
    """Seconds from typing one character to its echo."""
    start = time.perf_counter()
    way.send(b"x")
    _read_until(way.recv, b"x", timeout=10)
    return time.perf_counter() - start


def terminal_keystrokes(lab: TerminalLab, rounds: int) -> dict[str, Any]:
    """One character typed and its echo awaited, ``rounds`` times each way: through the portal's terminal,
    through ``ssh -tt``, and straight on the daemon's exec WebSockets. The ways take turns key by key, in a
    shuffled order, so that the load of this shared machine weighs on all three alike; each is read the same
    way (a blocking read in this thread). The line is cleared every 50 keys."""
    order = ["portal", "ssh", "direct"]
    times: dict[str, list[float]] = {name: [] for name in order}
    shuffle = random.Random(0).shuffle
    with contextlib.ExitStack() as stack:
        portal = terminal_open(lab)
        stack.callback(portal.close)
        ssh = _SshWay(lab)
        stack.callback(ssh.close)
        direct = stack.enter_context(_daemon_direct(lab))
        ways: dict[str, _Way] = {"portal": portal, "ssh": ssh, "direct": direct}
        for way in (ssh, direct):  # the portal's prompt came in terminal_open
            _read_until(way.recv, b"$ ")
        load_before = os.getloadavg()[0]
        for i in range(WARMUP + rounds):
            if i % 50 == 49:
                for way in ways.values():
                    way.send(b"\x15")  # Ctrl-U: an empty line again
                time.sleep(0.02)
                for way in ways.values():
                    _drain(way)
            shuffle(order)
            for name in order:
                elapsed = _keystroke(ways[name])
                if i >= WARMUP:
                    times[name].append(elapsed)
        return {
            "times": times,
            "load": (round(load_before, 2), round(os.getloadavg()[0], 2)),
            "deflate": bool(portal.extensions and "permessage-deflate" in portal.extensions),
        }


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle(ways: list[_WebSocketWay], seconds: float) -> None:
    """Leave the terminals idle for ``seconds``, answering the portal's keepalive pings as a browser does."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(1.0, left))
        for way in ways:
            _drain(way, 0)


def terminal_idle(lab: TerminalLab, count: int, window: float) -> dict[str, float]:
    """Open ``count`` terminals at once, leave them idle for ``window`` seconds: the portal's memory and CPU."""
    from concurrent.futures import ThreadPoolExecutor

    before = _rss_kib(lab.portal_pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        ways = list(pool.map(lambda _: terminal_open(lab), range(count)))
    opened_in = time.perf_counter() - start
    try:
        _idle(ways, 2)
        with_them = _rss_kib(lab.portal_pid)
        cpu0, t0 = _cpu_seconds(lab.portal_pid), time.perf_counter()
        _idle(ways, window)
        cpu = (_cpu_seconds(lab.portal_pid) - cpu0) / (time.perf_counter() - t0)
    finally:
        for way in ways:
            way.close()
    return {
        "terminals": count,
        "open_all_s": round(opened_in, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_with_mib": round(with_them / 1024, 1),
        "rss_per_terminal_kib": round((with_them - before) / count, 1),
        "idle_cpu_percent": round(cpu * 100, 2),
    }


def _ms(values: list[float], percentile: int | None = None) -> float:
    """The median (or a percentile) of ``values`` in milliseconds."""
    if percentile is None:
        return round(statistics.median(values) * 1000, 3)
    return round(statistics.quantiles(values, n=100)[percentile - 1] * 1000, 2)


def terminal_bench(daemon: str, rounds: int, idle: int, window: float) -> dict[str, Any]:
    with terminal_lab(daemon, max_open=idle + 5) as lab:
        keys = terminal_keystrokes(lab, rounds)
        idle_figures = terminal_idle(lab, idle, window)
    times = keys["times"]
    figures = {name: {"median": _ms(times[name]), "p95": _ms(times[name], 95)} for name in times}
    return {
        "daemon": daemon,
        "rounds": rounds,
        "keystroke_portal_ms": figures["portal"],
        "keystroke_ssh_ms": figures["ssh"],
        "keystroke_daemon_direct_ms": figures["direct"],
        "keystroke_ratio": round(statistics.median(times["portal"]) / statistics.median(times["ssh"]), 2),
        "portal_deflate": keys["deflate"],
        "load_average": list(keys["load"]),
        "idle": idle_figures,
    }


def terminal_report(r: dict[str, Any]) -> str:
    i, portal, ssh, direct = (
        r["idle"],
        r["keystroke_portal_ms"],
        r["keystroke_ssh_ms"],
        r["keystroke_daemon_direct_ms"],
    )
    return (
        f"{r['daemon']}: keystroke round trip, median (p95) of {r['rounds']}, the three ways taking turns: "
        f"portal terminal {portal['median']} ms ({portal['p95']}), ssh -tt {ssh['median']} ms ({ssh['p95']}), "
        f"ratio {r['keystroke_ratio']}; the daemon's exec WebSockets without the portal {direct['median']} ms "
        f"({direct['p95']}); permessage-deflate {'on' if r['portal_deflate'] else 'off'}; load average "
        f"{r['load_average'][0]} -> {r['load_average'][1]}\n"
        f"{r['daemon']}: {i['terminals']} idle terminals (opened in {i['open_all_s']} s): portal RSS "
        f"{i['rss_before_mib']} -> {i['rss_with_mib']} MiB ({i['rss_per_terminal_kib']} KiB each), "
        f"CPU {i['idle_cpu_percent']} % while idle"
    )


def _jupyter(daemon: str, rounds: int) -> dict[str, Any]:
    """The jupyter_* part, in bench/browser_jupyter.py (the same run)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import browser_jupyter  # type: ignore[import-not-found]
    from playwright.sync_api import sync_playwright

    from labgpu.runtime.client import RuntimeClient
    from labgpu.runtime.endpoint import Endpoint

    runtime = RuntimeClient(Endpoint.unix(Path(SOCKETS[daemon])), timeout=60)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=browser_jupyter.CHROMIUM_ARGS, headless=True
        )
        try:
            return dict(browser_jupyter.jupyter_first_load(runtime, browser, rounds))
        finally:
            browser.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemon", choices=sorted(SOCKETS), default="lxd")
    ap.add_argument(
        "--part",
        choices=["terminal", "jupyter", "all"],
        default="all",
        help="jupyter (bench/browser_jupyter.py: JupyterLab's first load through the portal vs straight to the "
        "container) needs the jupyter template on that daemon; all runs it on incus only",
    )
    ap.add_argument("--jupyter-rounds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=300, help="keystrokes timed each way")
    ap.add_argument("--idle", type=int, default=50, help="idle terminals opened at once")
    ap.add_argument("--window", type=float, default=20.0, help="seconds the idle terminals are watched")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    if args.part in ("terminal", "all"):
        results["terminal"] = terminal_bench(args.daemon, args.rounds, args.idle, args.window)
    if args.part == "jupyter" or (args.part == "all" and args.daemon == "incus"):
        results["jupyter"] = _jupyter(args.daemon, args.jupyter_rounds)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        if "terminal" in results:
            print(terminal_report(results["terminal"]))
        if "jupyter" in results:
            j = results["jupyter"]
            print(
                f"JupyterLab first load: through the portal {j['portal_s'] * 1000:.0f} ms, straight to the "
                f"container {j['direct_s'] * 1000:.0f} ms, ratio {j['ratio']:.2f} (target <= 1.2)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
