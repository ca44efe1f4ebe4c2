"""Two `labgpu serve` processes on ONE PostgreSQL store (a lab running the portal on two machines): each
runs its job runner, and each due job runs exactly once, never on both at the same time; the queued
notifications they both see are each delivered once, to a real webhook receiver."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from labgpu.services import notify, ops
from labgpu.settings import Settings
from labgpu.store import create_engine_for, upgrade
from labgpu.store.models import utcnow
from labgpu.store.models_notify import NotifyDelivery
from tests.postgres import fresh_databases
from tests.unit.gpu_store import GpuStore
from tests.webhooks import WebhookServer

pytestmark = pytest.mark.postgres
RUN_SECONDS = 12.0
GPU_SAMPLE_SECONDS = 10  # the shortest the setting allows: gpu-idle is due again within the run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_both(envs: list[dict[str, str]], tmp_path: Path) -> list[subprocess.Popen[bytes]]:
    """Start one `labgpu serve` per environment, at once, and wait until each answers /healthz."""
    labgpu = shutil.which("labgpu", path=str(Path(os.sys.executable).parent)) or "labgpu"
    started = []
    for i, env in enumerate(envs):
        port = _free_port()
        log = tmp_path / f"serve-{i}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [labgpu, "serve", "--host", "127.0.0.1", "--port", str(port), "--apps-port", "0"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append((proc, port, log))
    deadline = time.monotonic() + 90
    for proc, port, log in started:
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("labgpu serve did not start:\n" + log.read_text()[-2000:]) from None
                time.sleep(0.2)
    return [proc for proc, _, _ in started]


def test_two_portals_on_one_postgres_run_each_job_once(tmp_path: Path, webhook_server: WebhookServer) -> None:
    hooks = webhook_server
    lab_url = hooks.url("json", "/lab")
    with fresh_databases(prefix="labgpu_two_portals") as (url,):
        settings = Settings(state_dir=tmp_path / "state", database_url=url, notify_urls=[lab_url])
        engine = create_engine_for(settings)
        upgrade(settings, engine=engine)
        svc = GpuStore(settings=settings, engine=engine, backend="postgresql").svc()
        # Five notifications whose first attempt failed (the receiver refused), now due again.
        hooks.status = 503
        for i in range(5):
            assert notify.send(svc, notify.TEST, [notify.ADMINS], f"message {i}", "-") == 1
        assert notify.wait_for_deliveries()
        hooks.status = 200
        with svc.session() as session:
            session.execute(update(NotifyDelivery).values(next_attempt_at=utcnow() - timedelta(seconds=1)))

        env = {
            **os.environ,
            "LABGPU_DATABASE_URL": url,
            "LABGPU_JOBS_IN_SERVE": "true",
            "LABGPU_JOBS_TICK_SECONDS": "0.5",
            "LABGPU_GPU_SAMPLE_SECONDS": str(GPU_SAMPLE_SECONDS),
            "LABGPU_NOTIFY_URLS": json.dumps([lab_url]),
            "LABGPU_RUNTIME_URL": "unix:///nonexistent/labgpu-two-portals.socket",
            "LABGPU_TRUSTED_PROXIES": "",
        }
        procs: list[subprocess.Popen[bytes]] = []
        try:
            # Each machine has its own state dir; the store is shared.
            envs = [{**env, "LABGPU_STATE_DIR": str(tmp_path / f"state-{n}")} for n in ("a", "b")]
            procs = _serve_both(envs, tmp_path)
            time.sleep(RUN_SECONDS)  # both runners at work
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()

        runs = ops.job_runs(svc, limit=1000)
        svc_for_jobs = GpuStore(
            settings=settings.model_copy(update={"gpu_sample_seconds": GPU_SAMPLE_SECONDS}),
            engine=engine,
            backend="postgresql",
        ).svc()
        by_job: dict[str, list[ops.JobRunInfo]] = {}
        for r in runs:
            by_job.setdefault(r.job, []).append(r)
        assert set(by_job) == set(ops.JOBS), by_job  # every job was due at the start: each ran
        for job, job_runs in by_job.items():
            every = ops.JOBS[job].every(svc_for_jobs)
            for earlier, later in itertools.pairwise(job_runs):
                # Never two runs at once, and never again before it is due: once per period, whoever ran it.
                assert earlier.finished_at is not None and later.started_at >= earlier.finished_at, job_runs
                assert later.started_at - earlier.started_at >= every, (job, job_runs)
        assert len(by_job["gpu-idle"]) >= 2  # due again within the run: the leases let it run again
        # Each queued notification went out once (one refused try each before, by this process).
        assert sorted(h.body["title"] for h in hooks.to("/lab") if h.status == 200) == [
            f"message {i}" for i in range(5)
        ]
        assert {d.status for d in notify.list_deliveries(svc)} == {"sent"}
        engine.dispose()
