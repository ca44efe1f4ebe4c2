#!/usr/bin/env python3
"""Load: labgpu's portal and provisioning under many people at once, against a real daemon and a real
`labgpu serve` (a subprocess on a free loopback port, its own store), checked for correctness.

Four parts, each over real HTTP (cookies, CSRF tokens, every client from its own loopback address so
per-address throttling sees distinct people):

1. applications: N visitors apply at once (POST /api/v1/applications); an admin approves them all at
   once; the portal provisions them in the background. Checks: every member has exactly one running
   container, unique ports (store and proxy devices agree), a home folder of their uid, a portal
   account. Compared with the raw way: `lxc launch` + `lxc config device add ... proxy` for N
   containers in parallel, each waited on until sshd answers (same image, pool and profile; no home,
   no uid map).
2. listing: C containers in all (the N members' running ones plus stopped busybox ones of members
   written to the store): the admin's containers page and GET /api/v1/containers vs `lxc list
   --format json` (bench/portal.py measures the same in process, with daemon request counts).
3. power: P members stop and start their own containers in parallel (their session, the JSON API),
   then each sends a stop and a start at the same moment (two tabs). Checks: no 5xx, every answer the
   state asked for, the store's desired state equal to the daemon's state (no lost update), one audit
   event per action done.
4. users: U people at once (A admins loading the containers page and API, the others members logging
   in and loading their page and API), distinct accounts. Checks: no 5xx, no refusal (429/401), each
   member sees themself. Latency p50/p95/p99 and throughput.

Every failed check is listed and makes the exit status 1. The table goes to stdout, everything to
a JSON file. Everything made is deleted at the end (instances, the profile; homes and the store are in
a temporary folder; a PostgreSQL database made for the run is dropped).

    .venv/bin/python bench/load.py --daemon lxd
    .venv/bin/python bench/load.py --daemon incus --database postgresql://user:pw@localhost/postgres
    .venv/bin/python bench/load.py --quick                      # the CI scale
    .venv/bin/python bench/load.py --applications 10 --users 30 --no-raw

tests/reliability/test_load_quick.py runs the same code at the --quick scale (checks only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bench.list_instances import SOCKETS  # noqa: E402
from bench.portal import cli_list, create_containers, delete_containers, store_members  # noqa: E402

from labgpu.runtime.client import RuntimeClient  # noqa: E402
from labgpu.runtime.endpoint import Endpoint  # noqa: E402

CLIS = {"lxd": "lxc", "incus": "incus"}
SSH_ALIAS = "labgpu-test-ssh"
PASSWORD = "load-bench-walnut-83-harbor"  # admins and the store-written members
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Scale:
    applications: int = 50
    containers: int = 200
    power_members: int = 20
    power_cycles: int = 3
    users: int = 100
    admins: int = 5
    user_rounds: int = 5
    list_rounds: int = 7


QUICK = Scale(
    applications=5,
    containers=10,
    power_members=4,
    power_cycles=2,
    users=10,
    admins=2,
    user_rounds=3,
    list_rounds=3,
)


# Recording ------------------------------------------------------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (nearest rank)."""
    if not samples:
        return {}
    s = sorted(samples)

    def rank(p: float) -> float:
        return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]

    return {k: round(v * 1000, 1) for k, v in
            (("p50", rank(50)), ("p95", rank(95)), ("p99", rank(99)), ("max", s[-1]))}  # fmt: skip


@dataclass
class Recorder:
    """Every HTTP answer of a part: latency per kind, status counts, what was not as expected."""

    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[int] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)

    async def call(
        self, kind: str, send: Awaitable[httpx.Response], expect: tuple[int, ...] = (200,)
    ) -> httpx.Response | None:
        t0 = time.perf_counter()
        try:
            response = await send
        except httpx.HTTPError as exc:
            self.unexpected.append(f"{kind}: {type(exc).__name__}: {exc}")
            self.statuses[0] += 1
            return None
        self.samples[kind].append(time.perf_counter() - t0)
        self.statuses[response.status_code] += 1
        if response.status_code not in expect:
            self.unexpected.append(f"{kind}: HTTP {response.status_code} {response.text[:200]!r}")
        return response

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500 or status == 0)

    def summary(self) -> dict[str, Any]:
        every = [x for xs in self.samples.values() for x in xs]
        return {
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "latency_ms": percentiles(every),
            "by_kind_ms": {k: {"n": len(v), **percentiles(v)} for k, v in sorted(self.samples.items())},
        }


@dataclass
class Report:
    daemon: str
    database: str
    scale: Scale
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: object = "") -> bool:
        self.checks.append({"check": name, "ok": bool(ok), "detail": "" if ok else str(detail)[:2000]})
        return ok

    def no_errors(self, part: str, rec: Recorder) -> None:
        self.check(f"{part}: no 5xx and no failed request", rec.server_errors == 0, rec.unexpected[:10])
        self.check(f"{part}: every answer as expected", not rec.unexpected, rec.unexpected[:10])

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["ok"]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "daemon": self.daemon,
            "database": self.database,
            "scale": dataclasses.asdict(self.scale),
            "cpus": os.cpu_count(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "inotify_max_user_instances": inotify_instances(),
            "parts": self.parts,
            "checks": self.checks,
            "ok": not self.failures,
        }


# People: one HTTP client each ----------------------------------------------------------------------


def loopback(group: int, i: int) -> str:
    """A distinct loopback source address per person (the portal throttles per client address)."""
    return f"127.{group}.{i // 250}.{i % 250 + 1}"


class Person:
    """One browser: its own cookie jar and source address, the CSRF token of its session."""

    def __init__(self, url: str, address: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            transport=httpx.AsyncHTTPTransport(local_address=address, retries=0),
            timeout=httpx.Timeout(900),
            follow_redirects=False,
        )
        self.csrf = ""

    async def login(self, rec: Recorder, name: str, password: str) -> bool:
        form = await rec.call("GET /login", self.http.get("/login"))
        match = CSRF_RE.search(form.text) if form is not None else None
        if match is None:
            rec.unexpected.append(f"login {name}: no CSRF token on the form")
            return False
        data = {"name": name, "password": password, "csrf_token": match.group(1)}
        done = await rec.call("POST /login", self.http.post("/login", data=data), expect=(303,))
        return done is not None and done.status_code == 303

    async def fetch_csrf(self, rec: Recorder, path: str) -> None:
        page = await rec.call(f"GET {path}", self.http.get(path))
        match = CSRF_RE.search(page.text) if page is not None else None
        self.csrf = match.group(1) if match else ""

    def post(self, path: str, body: object = None) -> Awaitable[httpx.Response]:
        return self.http.post(path, json=body, headers={"X-CSRF-Token": self.csrf})

    async def close(self) -> None:
        await self.http.aclose()


# The lab under test --------------------------------------------------------------------------------


def port_block(span: int = 150) -> tuple[int, int]:
    """A random block of ``span`` host ports above the kernel's ephemeral range (32768-60999 here) and
    the tests' port ranges: a port in the ephemeral range may be taken by any outgoing connection
    (this run's own clients included) when the proxy device wants to listen on it."""
    start = 61000 + secrets.randbelow((65500 - 61000) // span) * span
    return start, start + span - 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Lab:
    """One run's labgpu: settings (own state dir, homes, port range), the store seen from here, the
    daemon, and `labgpu serve` on a free loopback port. Deletes its instances at the end."""

    def __init__(self, daemon: str, overrides: dict[str, str], workdir: Path) -> None:
        from labgpu.services.context import Actor, Services
        from labgpu.settings import load_settings
        from labgpu.store.db import create_engine_for, session_factory
        from labgpu.store.migrate import upgrade

        self.daemon = daemon
        self.workdir = workdir
        self.tag = "l" + secrets.token_hex(3)
        self.overrides = {**overrides, "trusted_proxies": ""}
        self.settings = load_settings(**self.overrides)
        self.engine = create_engine_for(self.settings)
        upgrade(self.settings, engine=self.engine)
        socket_path = self.overrides["runtime_url"].removeprefix("unix://")
        self.client = RuntimeClient(Endpoint.unix(Path(socket_path)), timeout=120, operation_timeout=600)
        self.svc = Services(
            settings=self.settings,
            runtime=self.client,
            sessions=session_factory(self.engine),
            actor=Actor("bench@load"),
        )
        self.extra_instances: list[str] = []
        self.url = ""
        self.log = workdir / "serve.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
        env.update({f"LABGPU_{k.upper()}": v for k, v in self.overrides.items()})
        return env

    @contextlib.contextmanager
    def served(self) -> Iterator[str]:
        """`labgpu serve` as a subprocess (as an admin runs it), until the block ends."""
        labgpu = shutil.which("labgpu", path=str(Path(sys.executable).parent)) or "labgpu"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("w") as out:
            proc = subprocess.Popen(
                [labgpu, "serve", "--host", "127.0.0.1", "--port", str(port), "--apps-port", "0"],
                env=self.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(self.url + "/healthz", timeout=2)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            "labgpu serve did not start:\n" + self.log.read_text()[-2000:]
                        ) from None
                    time.sleep(0.2)
            yield self.url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def add_admins(self, count: int) -> list[str]:
        from labgpu.services.portal import _accounts as accounts
        from labgpu.store.models import Role

        names = [f"{self.tag}adm{i}" for i in range(count)]
        for name in names:
            accounts.create_account(self.svc, name=name, password=PASSWORD, role=Role.ADMIN)
        return names

    def member_containers(self) -> list[str]:
        from sqlalchemy import select

        from labgpu.store.models import Member

        with self.svc.session() as session:
            return [c for c in session.scalars(select(Member.container)) if c]

    def cleanup(self) -> None:
        names = set(self.extra_instances)
        with contextlib.suppress(Exception):
            names |= set(self.member_containers())
        delete_containers(self.client, sorted(names), workers=8)
        self.engine.dispose()
        self.client.close()


# 1. Applications -----------------------------------------------------------------------------------


async def applications_part(lab: Lab, scale: Scale, report: Report, admin_name: str) -> dict[str, str]:
    """N applications at once, approved at once, provisioned; returns each applicant's password."""
    rec = Recorder()
    n = scale.applications
    names = [f"{lab.tag}a{i}" for i in range(n)]
    passwords = {name: f"{secrets.token_urlsafe(12)}-Qv7" for name in names}
    admin = Person(lab.url, loopback(9, 0))
    applicants = [Person(lab.url, loopback(1, i)) for i in range(n)]
    try:
        report.check("applications: the admin logs in", await admin.login(rec, admin_name, PASSWORD))
        await admin.fetch_csrf(rec, "/admin/applications")

        async def submit(person: Person, name: str) -> int | None:
            body = {"name": name, "email": f"{name}@lab.test", "password": passwords[name], "reason": "load"}
            r = await rec.call("apply", person.http.post("/api/v1/applications", json=body), expect=(201,))
            return int(r.json()["id"]) if r is not None and r.status_code == 201 else None

        t0 = time.perf_counter()
        ids = await asyncio.gather(*(submit(p, name) for p, name in zip(applicants, names, strict=True)))
        submit_s = time.perf_counter() - t0
        report.check(f"applications: all {n} received (201)", all(ids), ids)
        wanted = [i for i in ids if i is not None]

        sent_at: dict[int, float] = {}

        async def approve(application_id: int) -> bool:
            sent_at[application_id] = time.perf_counter()
            r = await rec.call(
                "approve", admin.post(f"/api/v1/applications/{application_id}/approve", {"gpus": "none"})
            )
            return r is not None and r.status_code == 200 and r.json()["status"] == "approved"

        t_approve = time.perf_counter()
        approved = await asyncio.gather(*(approve(i) for i in wanted))
        approve_burst_s = time.perf_counter() - t_approve
        report.check(f"applications: all {len(wanted)} approved at once (200)", all(approved), approved)

        # Poll as the admin's page does until every application is done or failed.
        done_at: dict[int, float] = {}
        status: dict[int, str] = {}
        deadline = time.monotonic() + 120 + 30 * n
        while len(done_at) < len(wanted) and time.monotonic() < deadline:
            await asyncio.sleep(1)
            r = await rec.call("GET /api/v1/applications", admin.http.get("/api/v1/applications"))
            if r is None or r.status_code != 200:
                continue
            now = time.perf_counter()
            for app in r.json():
                if app["id"] in sent_at and app["status"] in ("done", "failed") and app["id"] not in done_at:
                    done_at[app["id"]] = now
                    status[app["id"]] = f"{app['status']}: {app['progress']}"
        total_s = max(done_at.values(), default=time.perf_counter()) - t_approve
        report.check(
            f"applications: all {len(wanted)} provisioned (done)",
            len(done_at) == len(wanted) and all(s.startswith("done") for s in status.values()),
            {i: status.get(i, "unfinished") for i in wanted if not status.get(i, "").startswith("done")},
        )
        report.no_errors("applications", rec)
        latencies = [done_at[i] - sent_at[i] for i in done_at]
        report.parts["applications"] = {
            "n": n,
            "submit_all_s": round(submit_s, 2),
            "approve_all_s": round(approve_burst_s, 2),
            "all_done_s": round(total_s, 1),
            "per_member_s": {k: round(v / 1000, 2) for k, v in percentiles(latencies).items()},
            "http": rec.summary(),
        }
    finally:
        for p in (admin, *applicants):
            await p.close()
    check_members(lab, report, names)
    return passwords


def check_members(lab: Lab, report: Report, names: list[str]) -> None:
    """Store and daemon: one running container each, unique ports, proxies as stored, a home, an account."""
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload

    from labgpu.store.models import Account, Member

    with lab.svc.session() as session:
        rows = {
            m.name: m
            for m in session.scalars(
                select(Member).where(Member.name.in_(names)).options(selectinload(Member.port_maps))
            )
        }
        ports = {name: sorted(p.host_port for p in m.port_maps) for name, m in rows.items()}
        uids = {name: m.uid for name, m in rows.items()}
        with_password = set(
            session.scalars(
                select(Member.name)
                .join(Account, Account.member_id == Member.id)
                .where(Member.name.in_(names), Account.password_hash.is_not(None))
            )
        )
    report.check("applications: every applicant is a member", set(rows) == set(names), set(names) - set(rows))
    owned: dict[str, list[Any]] = defaultdict(list)
    for inst in lab.client.instances.all():
        owner = inst.label("owner")
        if owner in names:
            owned[owner].append(inst)
    wrong_count = {n: len(owned[n]) for n in names if len(owned[n]) != 1}
    report.check("applications: exactly one container per member", not wrong_count, wrong_count)
    not_running = {n: [i.status for i in owned[n]] for n in names if any(not i.running for i in owned[n])}
    report.check("applications: every container running", not not_running, not_running)
    every_port = [p for ps in ports.values() for p in ps]
    report.check(
        "applications: ports unique",
        len(every_port) == len(set(every_port)) and all(ports.values()),
        ports,
    )
    proxy_mismatch = {}
    for name in names:
        listens = sorted(
            int(d["listen"].rsplit(":", 1)[1])
            for inst in owned[name]
            for d in inst.expanded_devices.values()
            if d.get("type") == "proxy"
        )
        if listens != ports.get(name):
            proxy_mismatch[name] = (listens, ports.get(name))
    report.check("applications: proxy devices match the stored ports", not proxy_mismatch, proxy_mismatch)
    homes = {}
    for name in names:
        home = lab.settings.home_base / name
        if not home.is_dir() or home.stat().st_uid != uids.get(name):
            homes[name] = str(home)
    report.check("applications: every member has a home of their uid", not homes, homes)
    report.check(
        "applications: every member has a portal password",
        with_password == set(names),
        set(names) - with_password,
    )


def raw_launch(lab: Lab, n: int, profile: str, pool: str) -> dict[str, Any]:
    """The raw way for N members at once: launch, proxy device, wait for sshd; then delete them."""
    from labgpu.errors import LabgpuError
    from labgpu.services.members._ssh import wait_for_ssh

    cli = CLIS[lab.daemon]
    base = lab.settings.port_range_end + 1
    names = [f"{lab.tag}r{i}" for i in range(n)]
    lab.extra_instances += names

    def run(*argv: str) -> None:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")

    def one(i: int) -> float:
        t0 = time.perf_counter()
        run(cli, "launch", lab.settings.default_template, names[i], "-p", profile, "-s", pool)
        run(cli, "config", "device", "add", names[i], "ssh", "proxy",
            f"listen=tcp:127.0.0.1:{base + i}", "connect=tcp:127.0.0.1:22")  # fmt: skip
        deadline = time.monotonic() + 600
        while True:  # fail at once when the container stopped (its init died) instead of at the deadline
            try:
                wait_for_ssh("127.0.0.1", base + i, timeout=5)
                return time.perf_counter() - t0
            except LabgpuError:
                if time.monotonic() > deadline or lab.client.instances.state(names[i]).status != "Running":
                    raise

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool_:
        latencies = list(pool_.map(one, range(n)))
    total = time.perf_counter() - t0
    delete_containers(lab.client, names, workers=8)
    return {
        "n": n,
        "all_ssh_ready_s": round(total, 1),
        "per_container_s": {k: round(v / 1000, 2) for k, v in percentiles(latencies).items()},
    }


# 2. Listing ----------------------------------------------------------------------------------------


def add_listed_members(lab: Lab, count: int) -> list[str]:
    """``count`` stopped busybox containers with members (and portal accounts) written to the store."""
    from bench.list_instances import ensure_image

    from labgpu.services.portal._passwords import hash_password

    if count <= 0:
        return []
    ensure_image(lab.client)
    names = [f"{lab.tag}b{i}" for i in range(count)]
    lab.extra_instances += names
    create_containers(lab.client, names, workers=4)
    # Stored ports only (a stopped container has no proxy listening), below the portal's range; uids
    # past the ones the portal hands out.
    store_members(
        lab.svc,
        names,
        port_start=40000,
        uid_start=lab.settings.uid_base + lab.settings.uid_count // 2,
        password_hash=hash_password(PASSWORD),
    )
    return names


async def listing_part(lab: Lab, scale: Scale, report: Report, admin_name: str, expect: list[str]) -> None:
    rec = Recorder()
    admin = Person(lab.url, loopback(9, 1))
    try:
        report.check("listing: the admin logs in", await admin.login(rec, admin_name, PASSWORD))
        missing: dict[str, list[str]] = {}

        async def page() -> None:
            r = await rec.call("GET /admin/containers", admin.http.get("/admin/containers"))
            if r is not None:
                missing["page"] = [n for n in expect if n not in r.text]

        async def api() -> None:
            r = await rec.call("GET /api/v1/containers", admin.http.get("/api/v1/containers"))
            if r is not None and r.status_code == 200:
                listed = {c["name"] for c in r.json()}
                missing["api"] = [n for n in expect if n not in listed]

        def cli() -> None:
            cli_list(lab.daemon)

        await page(), await api()  # warm
        cli()
        times: dict[str, list[float]] = defaultdict(list)
        for _ in range(scale.list_rounds):
            for way, fn in (("page", page), ("api", api)):
                t0 = time.perf_counter()
                await fn()
                times[way].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await asyncio.to_thread(cli)
            times["cli"].append(time.perf_counter() - t0)
        report.check(
            f"listing: all {len(expect)} containers on the page and in the API",
            not any(missing.values()),
            missing,
        )
        report.no_errors("listing", rec)
        med = {way: statistics.median(ts) for way, ts in times.items()}
        report.parts["listing"] = {
            "containers": len(expect),
            "instances_on_daemon": len(lab.client.instances.all(with_state=False)),
            "rounds": scale.list_rounds,
            "page_ms": round(med["page"] * 1000, 1),
            "api_ms": round(med["api"] * 1000, 1),
            "cli_ms": round(med["cli"] * 1000, 1),
            "ratio_page_over_cli": round(med["page"] / med["cli"], 2),
            "ratio_api_over_cli": round(med["api"] / med["cli"], 2),
        }
    finally:
        await admin.close()


# 3. Power ------------------------------------------------------------------------------------------


def store_and_daemon(lab: Lab, names: list[str]) -> dict[str, tuple[str, str]]:
    """Each member's desired state in the store and its container's status on the daemon."""
    from sqlalchemy import select

    from labgpu.store.models import Member

    with lab.svc.session() as session:
        desired = {
            m.name: str(m.state) for m in session.scalars(select(Member).where(Member.name.in_(names)))
        }
    actual = {i.name: i.status for i in lab.client.instances.all(with_state=False)}
    return {n: (desired.get(n, "?"), actual.get(n, "missing")) for n in names}


def disagreeing(states: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    return {n: s for n, s in states.items() if s[0].capitalize() != s[1]}


def audit_count(lab: Lab, names: list[str], actions: list[str], since: int) -> int:
    from sqlalchemy import func, select

    from labgpu.store.models import AuditEvent

    with lab.svc.session() as session:
        found = session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.id > since, AuditEvent.target.in_(names), AuditEvent.action.in_(actions))
        )
    return int(found or 0)


def last_audit_id(lab: Lab) -> int:
    from sqlalchemy import func, select

    from labgpu.store.models import AuditEvent

    with lab.svc.session() as session:
        return int(session.scalar(select(func.max(AuditEvent.id))) or 0)


async def power_part(lab: Lab, scale: Scale, report: Report, passwords: dict[str, str]) -> None:
    rec = Recorder()
    names = list(passwords)[: scale.power_members]
    people = [Person(lab.url, loopback(3, i)) for i in range(len(names))]
    wrong: list[str] = []
    done = Counter[str]()
    since = last_audit_id(lab)
    try:
        logged_in = await asyncio.gather(
            *(p.login(rec, n, passwords[n]) for p, n in zip(people, names, strict=True))
        )
        report.check("power: every member logs in", all(logged_in), logged_in)
        await asyncio.gather(*(p.fetch_csrf(rec, "/me") for p in people))

        async def act(person: Person, name: str, action: str, expect: tuple[int, ...] = (200,)) -> str | None:
            r = await rec.call(f"POST {action}", person.post(f"/api/v1/members/{name}/{action}"), expect)
            if r is None or r.status_code != 200:
                return None
            done[action] += 1
            return str(r.json()["status"])

        async def cycle(person: Person, name: str) -> None:
            for _ in range(scale.power_cycles):
                for action, want in (("stop", "Stopped"), ("start", "Running")):
                    got = await act(person, name, action)
                    if got != want:
                        wrong.append(f"{name} {action}: {got}")

        t0 = time.perf_counter()
        await asyncio.gather(*(cycle(p, n) for p, n in zip(people, names, strict=True)))
        cycles_s = time.perf_counter() - t0
        report.check("power: every stop and start ended in the state asked for", not wrong, wrong)
        report.check(
            "power: store and daemon agree after the cycles",
            not disagreeing(states := store_and_daemon(lab, names)),
            disagreeing(states),
        )

        # Two tabs: a stop and a start at the same moment. Either order is fine; a 409 is a fair answer;
        # what the store says afterwards must be what the daemon did.
        async def race(person: Person, name: str) -> None:
            await asyncio.gather(
                act(person, name, "stop", (200, 409)), act(person, name, "start", (200, 409))
            )

        await asyncio.gather(*(race(p, n) for p, n in zip(people, names, strict=True)))
        raced = store_and_daemon(lab, names)
        report.check(
            "power: no lost update (store and daemon agree after racing stop/start)",
            not disagreeing(raced),
            disagreeing(raced),
        )
        # Leave every container running for the next part.
        await asyncio.gather(*(act(p, n, "start") for p, n in zip(people, names, strict=True)))
        settled = store_and_daemon(lab, names)
        report.check(
            "power: all running again, store and daemon agree",
            all(s == ("running", "Running") for s in settled.values()),
            settled,
        )
        audited = audit_count(lab, names, ["member.stop", "member.start"], since)
        report.check(
            "power: one audit event per action done",
            audited == sum(done.values()),
            f"{audited} events, {sum(done.values())} actions",
        )
        report.no_errors("power", rec)
        report.parts["power"] = {
            "members": len(names),
            "cycles": scale.power_cycles,
            "cycles_s": round(cycles_s, 1),
            "actions_done": dict(done),
            "http": rec.summary(),
        }
    finally:
        for p in people:
            await p.close()


# 4. Users ------------------------------------------------------------------------------------------


async def users_part(
    lab: Lab, scale: Scale, report: Report, admins: list[str], members: dict[str, str]
) -> None:
    """U people at once: admins load the containers page and API, members log in and load their own."""
    rec = Recorder()
    n_admins = min(scale.admins, len(admins), scale.users)
    people: list[tuple[str, str, bool]] = [(a, PASSWORD, True) for a in admins[:n_admins]]
    people += [(name, pw, False) for name, pw in list(members.items())[: scale.users - n_admins]]
    report.check(
        f"users: {scale.users} distinct accounts", len({p[0] for p in people}) == scale.users, len(people)
    )
    clients = [Person(lab.url, loopback(2, i)) for i in range(len(people))]
    mixups: list[str] = []
    refused: list[str] = []

    async def user(person: Person, name: str, password: str, admin: bool) -> None:
        if not await person.login(rec, name, password):
            refused.append(name)
            return
        for _ in range(scale.user_rounds):
            if admin:
                await rec.call("GET /admin/containers", person.http.get("/admin/containers"))
                await rec.call("GET /api/v1/containers", person.http.get("/api/v1/containers"))
                continue
            await rec.call("GET /me", person.http.get("/me"))
            me = await rec.call("GET /api/v1/me", person.http.get("/api/v1/me"))
            if me is not None and me.status_code == 200 and me.json()["name"] != name:
                mixups.append(f"{name} saw {me.json()['name']}")
            mine = await rec.call("GET /api/v1/members/NAME", person.http.get(f"/api/v1/members/{name}"))
            if mine is not None and mine.status_code == 200 and mine.json()["name"] != name:
                mixups.append(f"{name} got member {mine.json()['name']}")

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(user(c, *p) for c, p in zip(clients, people, strict=True)))
        wall = time.perf_counter() - t0
    finally:
        for c in clients:
            await c.close()
    report.check("users: every honest login accepted (none throttled)", not refused, refused)
    report.check("users: each member sees only themself", not mixups, mixups[:10])
    report.no_errors("users", rec)
    report.parts["users"] = {
        "users": len(people),
        "admins": n_admins,
        "rounds": scale.user_rounds,
        "wall_s": round(wall, 1),
        "throughput_rps": round(rec.requests / wall, 1),
        "http": rec.summary(),
    }


# The run --------------------------------------------------------------------------------------------


T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, also from code that already runs inside an event loop (pytest with Playwright's
    sync API keeps one running in the main thread): then in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run_load(
    daemon: str,
    overrides: dict[str, str],
    scale: Scale,
    *,
    workdir: Path,
    raw: bool = True,
    raw_profile: str | None = None,
    pool: str | None = None,
    database: str = "sqlite",
) -> Report:
    """The four parts against ``labgpu serve`` with these settings; the report holds every check.

    ``overrides`` are labgpu settings as for load_settings (state_dir, home_base, runtime_url, the port
    range, default_template, profile_name, storage_pool, ...). With ``raw`` the raw way is timed too (in
    ``raw_profile`` on ``pool``). Instances made are deleted at the end."""
    report = Report(daemon=daemon, database=database, scale=scale)
    lab = Lab(daemon, overrides, workdir)
    try:
        admins = lab.add_admins(max(2, scale.admins))
        if raw:
            report.parts["raw_launch"] = raw_launch(
                lab,
                scale.applications,
                raw_profile or lab.settings.profile_name,
                pool or lab.settings.storage_pool,
            )
        with lab.served():
            passwords = run_async(applications_part(lab, scale, report, admins[0]))
            if raw and "applications" in report.parts:
                ratio = (
                    report.parts["applications"]["all_done_s"] / report.parts["raw_launch"]["all_ssh_ready_s"]
                )
                report.parts["applications"]["ratio_over_raw"] = round(ratio, 2)
            t0 = time.perf_counter()
            listed = add_listed_members(lab, scale.containers - scale.applications)
            report.parts["listing_setup_s"] = round(time.perf_counter() - t0, 1)
            run_async(listing_part(lab, scale, report, admins[1], list(passwords) + listed))
            run_async(power_part(lab, scale, report, passwords))
            everyone = {**passwords, **{name: PASSWORD for name in listed}}
            run_async(users_part(lab, scale, report, admins, everyone))
        log = lab.log.read_text(errors="replace")
        report.check(
            "server: no traceback in the portal's log",
            "Traceback" not in log,
            log[log.find("Traceback") :][:1500],
        )
    finally:
        lab.cleanup()
    return report


def table(report: Report) -> str:
    """The figures and the checks, as text."""
    p = report.parts
    lines = [f"labgpu load: {report.daemon}, {report.database}, {os.cpu_count()} CPUs"]

    def lat(d: dict[str, float], unit: str = "ms") -> str:
        return " ".join(f"{k} {v}" for k, v in d.items()) + f" {unit}"

    if "applications" in p:
        a = p["applications"]
        lines.append(
            f"  applications {a['n']}: submitted in {a['submit_all_s']} s, approved in {a['approve_all_s']} s, "
            f"all provisioned in {a['all_done_s']} s; per member {lat(a['per_member_s'], 's')}"
        )
    if "raw_launch" in p:
        r = p["raw_launch"]
        lines.append(
            f"  raw launch+proxy {r['n']} in parallel: all sshd up in {r['all_ssh_ready_s']} s "
            f"(per container {lat(r['per_container_s'], 's')}); ratio labgpu/raw "
            f"{p.get('applications', {}).get('ratio_over_raw', '-')}"
        )
    if "listing" in p:
        li = p["listing"]
        lines.append(
            f"  listing {li['containers']} containers ({li['instances_on_daemon']} on the daemon), median of "
            f"{li['rounds']}: page {li['page_ms']} ms, API {li['api_ms']} ms, {CLIS[report.daemon]} list "
            f"{li['cli_ms']} ms (ratios {li['ratio_page_over_cli']} and {li['ratio_api_over_cli']})"
        )
    if "power" in p:
        pw = p["power"]
        lines.append(
            f"  power {pw['members']} members x {pw['cycles']} stop/start cycles: {pw['cycles_s']} s; "
            f"{lat(pw['http']['by_kind_ms'].get('POST stop', {}))} per stop, "
            f"{lat(pw['http']['by_kind_ms'].get('POST start', {}))} per start"
        )
    if "users" in p:
        u = p["users"]
        lines.append(
            f"  users {u['users']} at once ({u['admins']} admins), {u['rounds']} rounds: {u['http']['requests']} "
            f"requests in {u['wall_s']} s = {u['throughput_rps']} req/s; {lat(u['http']['latency_ms'])}"
        )
        for kind, d in u["http"]["by_kind_ms"].items():
            lines.append(f"    {kind:24s} n={d['n']:<5d} {lat({k: v for k, v in d.items() if k != 'n'})}")
    failed = report.failures
    lines.append(f"  checks: {len(report.checks) - len(failed)}/{len(report.checks)} passed")
    for c in failed:
        lines.append(f"  FAILED {c['check']}: {c['detail'][:500]}")
    return "\n".join(lines)


# Standalone set-up: image, profile, port range, optional PostgreSQL database --------------------------


@contextlib.contextmanager
def postgres_database(url: str) -> Iterator[str]:
    """A fresh database on the server of ``url`` for this run, dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"labgpu_load_{uuid.uuid4().hex[:10]}"
    base = make_url(url)
    if base.drivername in ("postgres", "postgresql"):
        base = base.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def inotify_instances() -> int | None:
    """fs.inotify.max_user_instances: every running systemd container takes about 8 of them, all
    unprivileged containers count as one host user, and past the limit a container's init dies at boot
    ("Failed to allocate manager object: Too many open files")."""
    try:
        return int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    except (OSError, ValueError):
        return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemon", choices=sorted(SOCKETS), default="lxd")
    ap.add_argument(
        "--database", help="PostgreSQL server URL (a database is made for the run); default SQLite"
    )
    ap.add_argument("--quick", action="store_true", help="the CI scale (5 applications, 10 users, ...)")
    base = Scale()
    for f in dataclasses.fields(Scale):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=int, help=f"default {getattr(base, f.name)}")
    ap.add_argument("--no-raw", action="store_true", help="skip the raw lxc/incus launch comparison")
    ap.add_argument("--out", type=Path, help="JSON report (default artifacts/load-DAEMON.json)")
    args = ap.parse_args()

    scale = QUICK if args.quick else base
    scale = dataclasses.replace(
        scale, **{f.name: getattr(args, f.name) for f in dataclasses.fields(Scale) if getattr(args, f.name)}
    )
    limit = inotify_instances()
    if limit is not None and limit < 8 * scale.applications + 24:
        print(
            f"fs.inotify.max_user_instances is {limit}: about {limit // 8} systemd containers can run at once "
            f"on this host, {scale.applications} are asked for; raise it first (LXD's production setup: "
            "sysctl fs.inotify.max_user_instances=1048576) or use fewer --applications",
            file=sys.stderr,
        )
        return 2
    # A plain kill (SIGTERM) runs the clean-up too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests.conftest import TEST_IMAGE_ALIASES, _ensure_test_image, ensure_test_pool

    socket_path = SOCKETS[args.daemon]
    client = RuntimeClient(Endpoint.unix(Path(socket_path)), timeout=120, operation_timeout=600)
    image = _ensure_test_image(client, "ssh")
    assert image == TEST_IMAGE_ALIASES["ssh"]
    pool = ensure_test_pool(client)
    tag = secrets.token_hex(3)
    profile = f"labgpu-load-{tag}"
    # What `host init` makes: the root disk on the pool, autostart. The raw way uses the same profile.
    client.profiles.create(
        profile,
        config={"boot.autostart": "true"},
        devices={"root": {"type": "disk", "path": "/", "pool": pool}},
        description="labgpu load bench (deleted at the end)",
    )
    # The portal's ports, then the raw way's just above them.
    start, end = port_block(max(150, 3 * scale.applications))
    workdir = Path(tempfile.mkdtemp(prefix=f"labgpu-load-{tag}-"))
    try:
        with contextlib.ExitStack() as stack:
            db_url = stack.enter_context(postgres_database(args.database)) if args.database else None
            overrides = {
                "state_dir": str(workdir / "state"),
                "home_base": str(workdir / "home"),
                "home_archive": str(workdir / "archive"),
                "runtime_url": f"unix://{socket_path}",
                "listen_address": "127.0.0.1",
                "port_range_start": str(start),
                "port_range_end": str(end - scale.applications),
                "default_template": image,
                "profile_name": profile,
                "storage_pool": pool,
                "default_gpus": "none",
                "ssh_ready_timeout": "600",
                **({"database_url": db_url} if db_url else {}),
            }
            report = run_load(
                args.daemon,
                overrides,
                scale,
                workdir=workdir,
                raw=not args.no_raw,
                raw_profile=profile,
                pool=pool,
                database="postgresql" if db_url else "sqlite",
            )
    finally:
        with contextlib.suppress(Exception):
            client.profiles.delete(profile)
        client.close()
        shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or ROOT / "artifacts" / f"load-{args.daemon}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    print(table(report))
    print(f"  report: {out}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
