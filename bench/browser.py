#!/usr/bin/env python3
"""Benchmark: browser access through the portal, against going to the container directly, in the same run.

Terminal part (``terminal_*``): one member container (the offline-built SSH test image) on a real LXD or
Incus, and `labgpu serve` as a subprocess on a free loopback port (as in production: its own process, so its
memory and CPU can be read from /proc).

- keystroke round trip: one character typed into the terminal's WebSocket until the pty's echo of it comes
  back, against the same through `ssh -tt` to the same container's SSH port (median and p95 of R rounds,
  and their ratio; targets: ratio <= 1.5, under 10 ms on loopback), and straight on the daemon's exec
  WebSockets without the portal (the floor of any bridge);
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
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    import socket

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
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
        env.update({f"LABGPU_{k.upper()}": v for k, v in overrides.items()})
        log = (work / "serve.log").open("w")
        portal = subprocess.Popen(
            [sys.executable, "-m", "labgpu.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
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


def terminal_open(lab: TerminalLab) -> Any:
    """One terminal's WebSocket, opened as the portal's page opens it; returns once the prompt is there."""
    from websockets.sync.client import connect

    ws = connect(
        lab.url.replace("http://", "ws://") + f"/terminal/{lab.name}/ws?cols=120&rows=40",
        origin=lab.url,  # type: ignore[arg-type]
        additional_headers={"Cookie": lab.cookie},
        compression=None,
        open_timeout=60,
    )
    _read_until(lambda timeout: ws.recv(timeout=timeout), b"$ ")
    return ws


def _read_until(recv: Any, needle: bytes, timeout: float = 30) -> None:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        data = recv(max(0.01, deadline - time.monotonic()))
        seen += data if isinstance(data, bytes) else data.encode()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{needle!r} did not come: {seen[-200:]!r}")


def _keystrokes(send: Any, recv: Any, rounds: int) -> list[float]:
    """Seconds from typing one character to its echo, ``rounds`` times (the line is cleared every 50)."""
    times = []
    for i in range(rounds):
        if i % 50 == 49:
            send(b"\x15")  # Ctrl-U: an empty line again (its echo is drained by the next waits)
            time.sleep(0.02)
            with contextlib.suppress(TimeoutError):
                while True:
                    recv(0.02)
        start = time.perf_counter()
        send(b"x")
        _read_until(recv, b"x", timeout=10)
        times.append(time.perf_counter() - start)
    return times


def terminal_keystrokes_portal(lab: TerminalLab, rounds: int) -> list[float]:
    """Keystrokes through the portal, from an asyncio client in this thread (a browser's event loop has no
    thread hand-off either; the sync client's reader thread would add its own to every echo)."""
    import asyncio

    from websockets.asyncio.client import connect

    async def run() -> list[float]:
        async with connect(
            lab.url.replace("http://", "ws://") + f"/terminal/{lab.name}/ws?cols=120&rows=40",
            origin=lab.url,  # type: ignore[arg-type]
            additional_headers={"Cookie": lab.cookie},
            compression=None,
        ) as ws:

            async def recv(timeout: float) -> bytes:
                data = await asyncio.wait_for(ws.recv(), timeout)
                return data if isinstance(data, bytes) else data.encode()

            async def until(needle: bytes, timeout: float = 30) -> None:
                seen = b""
                while needle not in seen:
                    seen += await recv(timeout)

            async def strokes(n: int) -> list[float]:
                times = []
                for i in range(n):
                    if i % 50 == 49:
                        await ws.send(b"\x15")
                        await asyncio.sleep(0.02)
                        with contextlib.suppress(TimeoutError):
                            while True:
                                await recv(0.02)
                    start = time.perf_counter()
                    await ws.send(b"x")
                    await until(b"x", 10)
                    times.append(time.perf_counter() - start)
                return times

            await until(b"$ ")
            await strokes(20)  # warm up
            return await strokes(rounds)

    return asyncio.run(run())


def terminal_keystrokes_direct(lab: TerminalLab, rounds: int) -> list[float]:
    """The floor of any bridge: the same keystrokes straight on the daemon's exec WebSockets (no portal)."""
    import asyncio

    from labgpu.runtime.client import RuntimeClient
    from labgpu.runtime.endpoint import Endpoint
    from labgpu.runtime.terminal import ExecStream, start_interactive
    from labgpu.services.members._terminal import TERMINAL_ENV, terminal_command

    client = RuntimeClient(Endpoint.unix(Path(SOCKETS[lab.daemon])))

    async def run() -> list[float]:
        started = start_interactive(
            client, lab.name, terminal_command("ubuntu"), environment=dict(TERMINAL_ENV)
        )
        stream = await ExecStream.connect(client, started)

        async def recv(timeout: float) -> bytes:
            data = await asyncio.wait_for(stream.recv(), timeout)
            if data is None:
                raise EOFError
            return data

        async def until(needle: bytes, timeout: float = 30) -> None:
            seen = b""
            while needle not in seen:
                seen += await recv(timeout)

        async def strokes(n: int) -> list[float]:
            times = []
            for i in range(n):
                if i % 50 == 49:
                    await stream.send(b"\x15")
                    await asyncio.sleep(0.02)
                    with contextlib.suppress(TimeoutError):
                        while True:
                            await recv(0.02)
                start = time.perf_counter()
                await stream.send(b"x")
                await until(b"x", 10)
                times.append(time.perf_counter() - start)
            return times

        try:
            await until(b"$ ")
            await strokes(20)
            return await strokes(rounds)
        finally:
            await stream.close()

    try:
        return asyncio.run(run())
    finally:
        client.close()


def terminal_keystrokes_ssh(lab: TerminalLab, rounds: int) -> list[float]:
    import select

    proc = subprocess.Popen(
        ["ssh", "-tt", *SSH_OPTS, "-i", str(lab.key), "-p", str(lab.ssh_port), "ubuntu@127.0.0.1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None
    fd = proc.stdout.fileno()

    def send(data: bytes) -> None:
        proc.stdin.write(data)  # type: ignore[union-attr]

    def recv(timeout: float) -> bytes:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            raise TimeoutError
        return os.read(fd, 65536)

    try:
        _read_until(recv, b"$ ")
        _keystrokes(send, recv, 20)
        return _keystrokes(send, recv, rounds)
    finally:
        proc.kill()
        proc.wait()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def terminal_idle(lab: TerminalLab, count: int, window: float) -> dict[str, float]:
    """Open ``count`` terminals at once, leave them idle for ``window`` seconds: the portal's memory and CPU."""
    from concurrent.futures import ThreadPoolExecutor

    before = _rss_kib(lab.portal_pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        sockets = list(pool.map(lambda _: terminal_open(lab), range(count)))
    opened_in = time.perf_counter() - start
    try:
        time.sleep(2)
        with_them = _rss_kib(lab.portal_pid)
        cpu0, t0 = _cpu_seconds(lab.portal_pid), time.perf_counter()
        time.sleep(window)
        cpu = (_cpu_seconds(lab.portal_pid) - cpu0) / (time.perf_counter() - t0)
    finally:
        for ws in sockets:
            ws.close()
    return {
        "terminals": count,
        "open_all_s": round(opened_in, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_with_mib": round(with_them / 1024, 1),
        "rss_per_terminal_kib": round((with_them - before) / count, 1),
        "idle_cpu_percent": round(cpu * 100, 2),
    }


def terminal_bench(daemon: str, rounds: int, idle: int, window: float) -> dict[str, Any]:
    with terminal_lab(daemon, max_open=idle + 5) as lab:
        portal = terminal_keystrokes_portal(lab, rounds)
        ssh = terminal_keystrokes_ssh(lab, rounds)
        direct = terminal_keystrokes_direct(lab, rounds)
        idle_figures = terminal_idle(lab, idle, window)

    def ms(values: list[float], q: float) -> float:
        return round(statistics.quantiles(values, n=100)[int(q) - 1] * 1000, 2) if q < 100 else 0.0

    portal_median, ssh_median = statistics.median(portal) * 1000, statistics.median(ssh) * 1000
    return {
        "daemon": daemon,
        "rounds": rounds,
        "keystroke_portal_ms": {"median": round(portal_median, 2), "p95": ms(portal, 95)},
        "keystroke_ssh_ms": {"median": round(ssh_median, 2), "p95": ms(ssh, 95)},
        "keystroke_daemon_direct_ms": {
            "median": round(statistics.median(direct) * 1000, 2),
            "p95": ms(direct, 95),
        },
        "keystroke_ratio": round(portal_median / ssh_median, 2),
        "idle": idle_figures,
    }


def terminal_report(r: dict[str, Any]) -> str:
    i = r["idle"]
    return (
        f"{r['daemon']}: keystroke round trip, median (p95) of {r['rounds']}: portal terminal "
        f"{r['keystroke_portal_ms']['median']} ms ({r['keystroke_portal_ms']['p95']}), ssh -tt "
        f"{r['keystroke_ssh_ms']['median']} ms ({r['keystroke_ssh_ms']['p95']}), ratio {r['keystroke_ratio']}; "
        f"the daemon's exec WebSockets without the portal {r['keystroke_daemon_direct_ms']['median']} ms "
        f"({r['keystroke_daemon_direct_ms']['p95']})\n"
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
