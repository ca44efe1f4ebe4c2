"""The job runner on a real store (SQLite, and PostgreSQL when LABGPU_TEST_POSTGRES_URL is set): one
runner per job at a time through a lease in the store, due times that survive a restart, failures
recorded and survived, `run-once` for cron and the thread inside `labgpu serve`."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from labgpu.errors import BadInput, LabgpuError
from labgpu.services.ops import _jobs as jobs
from labgpu.services.ops._jobs import Job, JobContext, JobResult
from labgpu.store import create_engine_for
from tests.unit.gpu_store import MIN, T0, GpuStore


def counting_job(calls: list[str], *, fail: Exception | None = None, every: timedelta = MIN) -> Job:
    def run(svc, ctx: JobContext) -> JobResult:  # type: ignore[no-untyped-def]
        calls.append(ctx.now.isoformat())
        if fail is not None:
            raise fail
        return JobResult(lines=["did it"])

    return Job("test-job", "a test job", lambda s: every, timedelta(minutes=5), run)


def test_of_many_runners_exactly_one_takes_the_lease(gpu_store: GpuStore) -> None:
    job = counting_job([])
    jobs.take_lease(gpu_store.svc(), job, owner="warm-up", now=T0 - MIN)  # the row exists; lease held
    svc = gpu_store.svc()
    jobs.finish(svc, job, owner="warm-up", now=T0 - MIN, started=T0 - 2 * MIN, error=None)
    winners: list[str] = []
    barrier = threading.Barrier(6)

    def race(n: int) -> None:
        barrier.wait()
        if jobs.take_lease(gpu_store.svc(), job, owner=f"runner-{n}", now=T0):
            winners.append(f"runner-{n}")

    threads = [threading.Thread(target=race, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1


def test_an_expired_lease_is_taken_over_and_the_late_runner_is_told(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc()
    job = counting_job([])
    assert jobs.take_lease(svc, job, owner="a", now=T0)
    assert not jobs.take_lease(svc, job, owner="b", now=T0 + 4 * MIN, force=True)  # a holds it
    assert jobs.take_lease(svc, job, owner="b", now=T0 + 5 * MIN, force=True)  # a's expired (5 min)
    assert not jobs.finish(svc, job, owner="a", now=T0 + 6 * MIN, started=T0, error=None)
    assert jobs.finish(svc, job, owner="b", now=T0 + 6 * MIN, started=T0 + 5 * MIN, error=None)


def test_due_times_live_in_the_store_and_survive_a_restart(
    gpu_store: GpuStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    job = counting_job(calls)
    monkeypatch.setattr(jobs, "JOBS", {job.name: job})
    (run,) = jobs.run_once(gpu_store.svc(), now=T0)
    assert (run.status, run.result.lines) == (jobs.OK, ["did it"])
    assert [r.status for r in jobs.run_once(gpu_store.svc(), now=T0 + 30 * timedelta(seconds=1))] == [
        jobs.NOT_DUE
    ]
    # A "restart": a new engine on the same database.
    engine = create_engine_for(gpu_store.settings)
    try:
        restarted = GpuStore(gpu_store.settings, engine, gpu_store.backend)
        (status,) = jobs.job_status(restarted.svc())
        assert status.next_run_at == T0 + MIN and status.last_status == "ok" and status.lease_owner is None
        assert [r.status for r in jobs.run_once(restarted.svc(), now=T0 + MIN)] == [jobs.OK]
        assert [r.status for r in jobs.run_once(restarted.svc(), job="test-job", now=T0 + MIN)] == [jobs.OK]
    finally:
        engine.dispose()
    assert len(calls) == 3


def test_a_failing_job_is_recorded_and_runs_again_when_due(
    gpu_store: GpuStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    boom = counting_job(calls, fail=LabgpuError("the daemon said no"))
    bug = Job("bug", "a job with a bug", lambda s: MIN, MIN, counting_job(calls, fail=KeyError("x")).run)
    monkeypatch.setattr(jobs, "JOBS", {boom.name: boom, bug.name: bug})
    runs = jobs.run_once(gpu_store.svc(), now=T0)
    assert [(r.job, r.status, r.result.errors) for r in runs] == [
        ("test-job", "failed", ["the daemon said no"]),
        ("bug", "failed", ["KeyError: 'x'"]),
    ]
    status = {s.name: s for s in jobs.job_status(gpu_store.svc())}
    assert status["test-job"].last_error == "the daemon said no" and status["test-job"].lease_owner is None
    assert [r.status for r in jobs.run_once(gpu_store.svc(), now=T0 + MIN)] == ["failed", "failed"]


def test_unknown_job() -> None:
    with pytest.raises(BadInput, match="unknown job 'nope'"):
        jobs.run_once(None, job="nope")  # type: ignore[arg-type]


def test_the_runner_thread_runs_due_jobs_and_stops(
    gpu_store: GpuStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    job = counting_job(calls, every=timedelta(hours=1))
    monkeypatch.setattr(jobs, "JOBS", {job.name: job})
    stop = jobs.start_job_runner(gpu_store.svc(), tick=0.05)
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    stop()
    assert len(calls) == 1  # due once an hour: the following ticks found it not due
    (status,) = jobs.job_status(gpu_store.svc())
    assert status.last_status == "ok" and status.lease_owner is None


def test_serve_runs_the_job_runner_for_as_long_as_the_app_lives(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from labgpu.settings import Settings
    from labgpu.store import upgrade
    from labgpu.web.app import create_app

    settings = Settings(state_dir=tmp_path / "state", runtime_url=f"unix://{tmp_path}/no-daemon.socket")
    upgrade(settings)

    def runners() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "labgpu-jobs" and t.is_alive()]

    before = len(runners())
    with TestClient(create_app(settings)):
        assert len(runners()) == before + 1
    assert len(runners()) == before
    off = settings.model_copy(update={"jobs_in_serve": False})
    with TestClient(create_app(off)):
        assert len(runners()) == before


def test_the_bookings_job_moves_bookings_even_when_the_daemon_is_away(gpu_store: GpuStore) -> None:
    from labgpu.services.gpus import _bookings as bookings
    from tests.unit.gpu_store import GPUS, H

    svc = gpu_store.svc()
    view = bookings.book(
        svc, member="alice", gpus="1,", start=T0 + H, end=T0 + 2 * H, now=T0, gpus_on_host=GPUS
    )
    (run,) = jobs.run_once(svc, job="bookings", now=T0 + H)
    assert run.status == "failed"
    assert run.result.lines == [f"booking {view.id} (alice, GPU 1): approved -> active"]
    assert run.result.errors[0].startswith(
        "GPUs on gpu1 not attached or detached: cannot reach the LXD/Incus daemon"
    )
    assert bookings.get_booking(svc, view.id).status == "active"
