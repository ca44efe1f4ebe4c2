#!/usr/bin/env python3
"""Benchmark: the admin's all-containers page and GET /api/v1/containers with N containers, against
`lxc list --format json` (or `incus list`) in the same run.

Creates N small stopped containers (busybox test image) owned by N members in a private store (rows
written directly: fast), an admin with a login session and an API token, then times each way of listing
(median of R rounds) in process (FastAPI's TestClient), prints the ratios and how many requests the
portal made to the daemon per page view (it must be 1 per host), and deletes what it created.

    .venv/bin/python bench/portal.py --daemon lxd -n 200
    .venv/bin/python bench/portal.py --daemon incus -n 200 --json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.list_instances import ALIAS, CLI, SOCKETS, ensure_image, timed

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint

PASSWORD = "bench-portal-password-9187"


def store_members(
    svc,  # type: ignore[no-untyped-def]
    names: list[str],
    *,
    port_start: int,
    uid_start: int | None = None,
    password_hash: str | None = None,
) -> None:
    """Members of the existing stopped containers ``names``, written straight to the store (fast): one SSH
    port map each from ``port_start``, uids from ``uid_start`` (default: the policy's uid_base), and a
    portal account with ``password_hash`` when one is given."""
    from labgpu.services.hosts._records import local_host
    from labgpu.store.models import Account, Member, MemberState, PortMap, PortPurpose

    uid_start = svc.settings.uid_base if uid_start is None else uid_start
    with svc.session() as session:
        host = local_host(session, svc.runtime)
        for i, name in enumerate(names):
            member = Member(
                name=name,
                email=f"{name}@bench.test",
                uid=uid_start + i,
                host_id=host.id,
                container=name,
                state=MemberState.STOPPED,
                template=ALIAS,
                gpu_spec="none",
            )
            member.port_maps.append(
                PortMap(
                    host_id=host.id,
                    listen_address="127.0.0.1",
                    host_port=port_start + i,
                    container_port=22,
                    purpose=PortPurpose.SSH,
                )
            )
            session.add(member)
            if password_hash is not None:
                session.flush()
                session.add(Account(member_id=member.id, password_hash=password_hash))


def create_containers(client: RuntimeClient, names: list[str], *, workers: int = 4) -> float:
    """Small stopped containers (busybox test image) marked as labgpu's; returns the seconds it took."""

    def create(name: str) -> None:
        client.instances.create(name, image=ALIAS, config={"user.labgpu.owner": name})

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(create, names))
    return time.perf_counter() - t0


def delete_containers(client: RuntimeClient, names: list[str], *, workers: int = 4) -> None:
    """Delete the instances ``names`` (stopped first), ignoring failures (clean-up)."""

    def rm(name: str) -> None:
        with contextlib.suppress(Exception):
            client.instances.stop(name, force=True)
        with contextlib.suppress(Exception):
            client.instances.delete(name)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(rm, names))


def cli_list(daemon: str) -> None:
    """The raw way: `lxc list --format json` (or incus), output parsed."""
    json.loads(subprocess.run(CLI[daemon], check=True, capture_output=True).stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemon", choices=sorted(SOCKETS), default="lxd")
    ap.add_argument("-n", type=int, default=200, help="containers and members to create (default 200)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from labgpu.services.context import Actor, Services
    from labgpu.services.portal import _accounts as accounts
    from labgpu.services.portal import _tokens as api_tokens
    from labgpu.services.portal._accounts import Identity
    from labgpu.settings import load_settings
    from labgpu.store.db import create_engine_for, session_factory
    from labgpu.store.migrate import upgrade
    from labgpu.store.models import Role
    from labgpu.web.app import create_app

    socket = SOCKETS[args.daemon]
    client = RuntimeClient(Endpoint.unix(Path(socket)))
    ensure_image(client)
    prefix = f"bp-{secrets.token_hex(3)}"
    names = [f"{prefix}-{i}" for i in range(args.n)]

    tmp = tempfile.TemporaryDirectory(prefix="labgpu-bench-portal-")
    try:
        created_s = create_containers(client, names)

        settings = load_settings(
            state_dir=f"{tmp.name}/state",
            runtime_url=f"unix://{socket}",
            listen_address="127.0.0.1",
            trusted_proxies="",
        )
        engine = create_engine_for(settings)
        upgrade(settings, engine=engine)
        runtime = RuntimeClient(Endpoint.unix(Path(socket)))
        svc = Services(
            settings=settings, runtime=runtime, sessions=session_factory(engine), actor=Actor("bench")
        )
        store_members(svc, names, port_start=40000)
        accounts.create_account(svc, name="boss", password=PASSWORD, role=Role.ADMIN)
        boss = next(a for a in accounts.list_accounts(svc, admins_only=True))
        from sqlalchemy import select

        from labgpu.store.models import Member

        with svc.session() as session:
            boss_id = session.scalars(select(Member.id).where(Member.name == boss.name)).one()
        token, _ = api_tokens.create_token(
            svc, Identity(boss_id, "boss", "admin", "token"), name="bench", expires_days=1
        )

        app = create_app(settings, services=svc, background=False)
        with TestClient(app) as web:
            form = web.get("/login").text
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert csrf is not None
            r = web.post(
                "/login",
                data={"name": "boss", "password": PASSWORD, "csrf_token": csrf.group(1)},
                follow_redirects=False,
            )
            assert r.status_code == 303, r.text[:200]
            requests: dict[str, list[int]] = {"page": [], "api": []}

            def page() -> None:
                before = runtime.request_count
                response = web.get("/admin/containers")
                requests["page"].append(runtime.request_count - before)
                assert response.status_code == 200 and names[-1] in response.text

            def api() -> None:
                before = runtime.request_count
                response = web.get("/api/v1/containers", headers={"Authorization": f"Bearer {token}"})
                requests["api"].append(runtime.request_count - before)
                assert response.status_code == 200 and len(response.json()) >= args.n

            def cli() -> None:
                cli_list(args.daemon)

            page(), api(), cli()  # warm all three
            t_page = statistics.median(timed(page, args.rounds))
            t_api = statistics.median(timed(api, args.rounds))
            t_cli = statistics.median(timed(cli, args.rounds))
        engine.dispose()
        runtime.close()
        per_view = max(requests["page"] + requests["api"])
        result = {
            "daemon": args.daemon,
            "containers": args.n,
            "create_s": round(created_s, 1),
            "page_s": round(t_page, 4),
            "api_s": round(t_api, 4),
            "cli_s": round(t_cli, 4),
            "ratio_page_over_cli": round(t_page / t_cli, 3),
            "ratio_api_over_cli": round(t_api / t_cli, 3),
            "daemon_requests_per_page_view": max(requests["page"]),
            "daemon_requests_per_api_call": max(requests["api"]),
        }
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{args.daemon}: {args.n} stopped containers of {args.n} members (made in {created_s:.0f} s), median of {args.rounds}"
            )
            print(
                f"  GET /admin/containers:    {t_page * 1000:8.1f} ms  ({max(requests['page'])} daemon request per view)"
            )
            print(
                f"  GET /api/v1/containers:   {t_api * 1000:8.1f} ms  ({max(requests['api'])} daemon request per call)"
            )
            print(f"  {' '.join(CLI[args.daemon])}: {t_cli * 1000:8.1f} ms")
            print(f"  ratio page / cli: {t_page / t_cli:.3f}   ratio api / cli: {t_api / t_cli:.3f}")
        return 0 if per_view == 1 else 1
    finally:
        delete_containers(client, names)
        client.close()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
