"""The job runner: periodic, idempotent jobs whose state lives in the store.

Jobs (:data:`JOBS`):

- ``bookings`` (every minute): bookings whose start has come become active and their GPUs are
  attached; those whose end has come end and their GPUs are detached
  (:func:`labgpu.services.gpus._bookings.advance`, then :func:`labgpu.services.gpus._attach.sync_host` on every
  host where GPUs may be booked (:func:`booking_hosts`), each through its own daemon; it also puts back
  whatever drifted). A host whose daemon does not answer is an error naming it; the others go on.
- ``gpu-idle`` (every ``gpu_sample_seconds``): one GPU sample per GPU and one usage sample per GPU and
  member (the local host's from NVML, other hosts' from their GPU agents), then the fair-use limits on
  what it saw, then the idle rule on every host: mail once per idle spell, release idle bookings when
  policy says so.
- ``gpu-free`` (every minute): members who asked to be told when GPUs are free are told once when they
  are (by the samples ``gpu-idle`` writes; :func:`labgpu.services.gpus.check_free_requests`).
- ``reconcile`` (every ``reconcile_interval_minutes``): :func:`labgpu.services.ops._reconcile.reconcile`.
- ``usage-rollup`` (every 10 minutes): complete hours of GPU usage samples into hourly rows, complete days
  into daily rows (:func:`labgpu.services.gpus._history.roll_up`).
- ``prune`` (daily): GPU samples older than ``gpu_samples_keep_days``, usage history past its keep days,
  slots of long-ended bookings.

Each job has a :class:`~labgpu.store.models.JobState` row: when it last ran and how, when it is due
next, and a LEASE (owner and expiry). A runner works on a job only after taking its lease in ONE
conditional UPDATE (``... WHERE lease_until IS NULL OR lease_until <= now``), which only one writer can
win on SQLite and PostgreSQL alike; so two runners (``labgpu serve`` and a cron ``labgpu jobs
run-once``, or two hosts sharing a PostgreSQL store) never run the same job at once. A runner that dies
leaves its lease to expire; every job is safe to run again, so nothing is lost but time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from labgpu.errors import BadInput, LabgpuError
from labgpu.gpu.nvml import GpuSource
from labgpu.services import gpus, notify
from labgpu.services.context import SYSTEM, Services
from labgpu.services.ops._job_bookings import run_bookings
from labgpu.services.ops._job_types import Job, JobContext, JobResult
from labgpu.services.ops._reconcile import reconcile
from labgpu.store.models import JobState, utcnow
from labgpu.store.models_notify import JobRunRecord

log = logging.getLogger(__name__)

OK = "ok"
FAILED = "failed"
BUSY = "busy"  # another runner holds the lease
NOT_DUE = "not due"


# The jobs -----------------------------------------------------------------------------------------


def run_gpu_idle(svc: Services, ctx: JobContext) -> JobResult:
    """Sample the GPUs (the local host's through NVML, other hosts' from their GPU agents), then tell
    (or release) whoever holds an idle one, on every host. A host whose agent does not answer is a
    note, not a failure."""
    result = JobResult()
    sampled = gpus.sample_gpus(svc, source=ctx.source(), now=ctx.now, proc_root=ctx.proc_root)
    result.lines.append(f"{sampled.samples} GPU sample(s)" + (f" ({sampled.note})" if sampled.note else ""))
    reader = ctx.reader()
    agents = gpus.sample_agents(svc, reader=reader, now=ctx.now)
    result.lines += [f"{host}: {n} GPU sample(s) from its GPU agent" for host, n in agents.samples.items()]
    result.lines += agents.notes
    fair = gpus.check_fair_use(svc, [*sampled.seen, *agents.seen], now=ctx.now)
    result.lines += fair.lines()
    result.errors += fair.errors
    report = gpus.check_idle(svc, now=ctx.now, reader=reader)
    for g in report.idle:
        result.lines.append(f"idle: GPU {g.gpu} on {g.host} of {g.member} for {g.minutes} min")
    result.lines += [f"told {n}" for n in report.notified]
    result.lines += [f"released booking {b}" for b in report.released]
    result.lines += [f"{o.member}: {o.message}" for o in report.detached if not o.failed]
    result.errors += report.errors + [f"{o.member}: {o.message}" for o in report.detached if o.failed]
    result.data["idle"] = [g.as_dict() for g in report.idle]
    return result


def run_reconcile(svc: Services, ctx: JobContext) -> JobResult:
    """Repair drift between the store and the daemon (members' containers)."""
    report = reconcile(svc, provisioning_grace=timedelta(minutes=15))
    result = JobResult(data={"reconcile": report.as_dict()})
    result.lines += [f"{a.member}: {a.action} {a.detail}" for a in report.repairs]
    result.errors += [f"{a.member}: {a.detail}: {a.error}" for a in report.failures]
    if not result.lines and not result.errors:
        result.lines.append(f"{report.members} member(s), nothing to repair")
    return result


def run_usage_rollup(svc: Services, ctx: JobContext) -> JobResult:
    """Roll complete hours of GPU usage samples into hourly rows, and complete days into daily ones."""
    hours, days = gpus.roll_up(svc, now=ctx.now, tz=gpus.local_tz())
    return JobResult(lines=[f"{hours} hourly and {days} daily GPU usage row(s) written"])


def run_weekly_report(svc: Services, ctx: JobContext) -> JobResult:
    """Send the week's GPU usage reports: the lab's to the admins, each opted-in member's to them. Queued
    (notify): a channel that fails is retried, and a week is sent once (the key names it)."""
    week = ctx.now.astimezone(gpus.local_tz()).strftime("%G-W%V")
    queued = 0
    for report in gpus.weekly_reports(svc, now=ctx.now, tz=gpus.local_tz()):
        if report.report.total.gpu_hours <= 0:
            continue  # a week without GPU use (a new lab, a portal just started): nothing to report
        for who in report.recipients:
            to = notify.ADMINS if who == "admins" else who
            queued += notify.send(
                svc,
                notify.WEEKLY_REPORT,
                [to],
                report.subject,
                report.body,
                key=f"weekly-report:{week}:{who}",
            )
    return JobResult(lines=[f"{queued} weekly usage report delivery(ies) queued for {week}"])


def run_prune(svc: Services, ctx: JobContext) -> JobResult:
    """Delete GPU samples past their keep time, usage history past its keep time (once rolled up), the
    slots of bookings that ended a day ago, and notifications and job runs older than :data:`HISTORY_DAYS`."""
    samples = gpus.prune_samples(svc, before=ctx.now - timedelta(days=svc.settings.gpu_samples_keep_days))
    slots = gpus.prune_slots(svc, before=ctx.now - timedelta(days=1))
    raw, hourly, daily = gpus.prune_usage(svc, now=ctx.now)
    old = ctx.now - timedelta(days=HISTORY_DAYS)
    deliveries = notify.prune_deliveries(svc, before=old)
    with svc.session() as session:
        runs = session.execute(delete(JobRunRecord).where(JobRunRecord.started_at < old))
    lines = [
        f"{samples} old GPU sample(s) and {slots} booking slot(s) of ended bookings deleted",
        f"{deliveries} old notification(s) and {getattr(runs, 'rowcount', 0)} job run(s) deleted",
    ]
    if raw or hourly or daily:
        lines.append(
            f"{raw} raw, {hourly} hourly and {daily} daily GPU usage row(s) past their keep time deleted"
        )
    return JobResult(lines=lines)


def run_gpu_free(svc: Services, ctx: JobContext) -> JobResult:
    """Tell the members waiting for free GPUs whose GPUs are free (once), and end expired requests."""
    report = gpus.check_free_requests(svc, now=ctx.now)
    return JobResult(lines=report.lines(), data={"sent": [v.id for v in report.sent]})


def run_notify(svc: Services, ctx: JobContext) -> JobResult:
    """Send the queued notifications that are due: those whose first attempt failed (or whose portal
    stopped before it sent them), with a doubling wait between attempts. A channel that fails is a
    line, not the job's failure: it only delays its own messages."""
    report = notify.deliver_due(svc, now=ctx.now)
    return JobResult(lines=report.lines() or ["nothing to send"])


HISTORY_DAYS = 30


JOBS: dict[str, Job] = {
    job.name: job
    for job in (
        Job("bookings", "start and end bookings; attach and detach their GPUs", lambda s: timedelta(minutes=1),
            timedelta(minutes=10), run_bookings),
        Job("gpu-idle", "sample GPU use per member; fair-use limits; mail about (or release) idle GPUs",
            lambda s: timedelta(seconds=s.settings.gpu_sample_seconds), timedelta(minutes=10), run_gpu_idle),
        Job("gpu-free", "tell members waiting for free GPUs when they are free", lambda s: timedelta(minutes=1),
            timedelta(minutes=10), run_gpu_free),
        Job("reconcile", "repair drift between the store and the daemon",
            lambda s: timedelta(minutes=s.settings.reconcile_interval_minutes), timedelta(minutes=30), run_reconcile),
        Job("usage-rollup", "roll GPU usage samples up into hours and days", lambda s: timedelta(minutes=10),
            timedelta(minutes=30), run_usage_rollup),
        Job("weekly-report", "send the week's GPU usage reports (admins; members who asked)",
            lambda s: timedelta(days=7), timedelta(minutes=30), run_weekly_report),
        Job("prune", "delete old GPU samples, usage history, booking slots, notifications and job runs",
            lambda s: timedelta(days=1), timedelta(minutes=30), run_prune),
        Job("notify", "send queued notifications again that could not be sent", lambda s: timedelta(seconds=30),
            timedelta(minutes=10), run_notify),
    )
}  # fmt: skip


# Leases -------------------------------------------------------------------------------------------


def runner_id() -> str:
    """Who holds a lease: host, process and a random part (two runners in one process differ)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _ensure_row(svc: Services, name: str) -> None:
    with svc.session() as session:
        if session.get(JobState, name) is not None:
            return
    try:
        with svc.session() as session:
            session.add(JobState(name=name))
    except IntegrityError:
        pass  # another runner made it first


def take_lease(svc: Services, job: Job, *, owner: str, now: datetime, force: bool = False) -> bool:
    """Take ``job``'s lease for ``owner`` if nobody holds it (or theirs expired) and, unless ``force``,
    the job is due. One conditional UPDATE: of two runners, exactly one wins."""
    _ensure_row(svc, job.name)
    conditions = [
        JobState.name == job.name,
        or_(JobState.lease_until.is_(None), JobState.lease_until <= now, JobState.lease_owner == owner),
    ]
    if not force:
        conditions.append(or_(JobState.next_run_at.is_(None), JobState.next_run_at <= now))
    with svc.session() as session:
        result = session.execute(
            update(JobState)
            .where(*conditions)
            .values(lease_owner=owner, lease_until=now + job.lease, last_started_at=now)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1


def finish(
    svc: Services, job: Job, *, owner: str, now: datetime, started: datetime, error: str | None
) -> bool:
    """Record the run's end and the next due time, and give the lease back. False when the lease was
    taken over meanwhile (this run outlived it)."""
    with svc.session() as session:
        result = session.execute(
            update(JobState)
            .where(JobState.name == job.name, JobState.lease_owner == owner)
            .values(
                last_finished_at=now,
                last_status=FAILED if error else OK,
                last_error=error,
                next_run_at=started + job.every(svc),
                lease_owner=None,
                lease_until=None,
            )
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1


# Running ------------------------------------------------------------------------------------------


@dataclass
class JobRun:
    """One job in one `run-once`: its status and what it did."""

    job: str
    status: str  # ok, failed, busy, not due
    result: JobResult = field(default_factory=JobResult)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "status": self.status,
            "lines": self.result.lines,
            "errors": self.result.errors,
            **self.result.data,
        }


def _record_start(svc: Services, job: Job, *, owner: str, started: datetime) -> int | None:
    """A history row for this run (the lease is this runner's). None when it cannot be written: the
    history must never stop a job."""
    try:
        with svc.session() as session:
            row = JobRunRecord(job=job.name, owner=owner[:128], started_at=started)
            session.add(row)
            session.flush()
            return int(row.id)
    except LabgpuError as exc:
        log.warning("job %s: its run is not recorded: %s", job.name, exc.message)
        return None


def _record_end(svc: Services, run_id: int | None, *, finished: datetime, status: str) -> None:
    if run_id is None:
        return
    try:
        with svc.session() as session:
            session.execute(
                update(JobRunRecord)
                .where(JobRunRecord.id == run_id)
                .values(finished_at=finished, status=status)
            )
    except LabgpuError as exc:
        log.warning("job run %s: its end is not recorded: %s", run_id, exc.message)


@dataclass(frozen=True)
class JobRunInfo:
    """One recorded run of a job."""

    job: str
    owner: str
    started_at: datetime
    finished_at: datetime | None
    status: str | None


def job_runs(svc: Services, *, job: str | None = None, limit: int = 100) -> list[JobRunInfo]:
    """The latest recorded runs (of ``job``), oldest first."""
    query = select(JobRunRecord).order_by(JobRunRecord.started_at.desc(), JobRunRecord.id.desc()).limit(limit)
    if job is not None:
        query = query.where(JobRunRecord.job == job)
    with svc.session() as session:
        rows = list(session.scalars(query))
    return [JobRunInfo(r.job, r.owner, r.started_at, r.finished_at, r.status) for r in reversed(rows)]


def run_job(
    svc: Services,
    job: Job,
    *,
    now: datetime | None = None,
    owner: str | None = None,
    force: bool = False,
    gpu_source: Callable[[], GpuSource] | None = None,
    agent_transport: httpx.BaseTransport | None = None,
    proc_root: str = "/proc",
) -> JobRun:
    """Run ``job`` if it is due (or ``force``) and its lease is free. Never raises for the job's own
    failure: that is recorded (status failed, the error in its state) and returned. ``gpu_source``,
    ``proc_root`` and ``agent_transport`` replace NVML, /proc and the network to the GPU agents (tests
    and demos)."""
    # An injected clock (tests, `run-once --now`) is used throughout; otherwise the real one.
    started = now or utcnow()
    owner = owner or runner_id()
    svc = replace(svc, actor=SYSTEM)
    if not take_lease(svc, job, owner=owner, now=started, force=force):
        with svc.session() as session:
            state = session.get(JobState, job.name)
            busy = state is not None and state.lease_until is not None and state.lease_until > started
        return JobRun(job.name, BUSY if busy else NOT_DUE)
    run_id = _record_start(svc, job, owner=owner, started=started)
    error: str | None = None
    try:
        context = JobContext(
            now=started, gpu_source=gpu_source, agent_transport=agent_transport, proc_root=proc_root
        )
        result = job.run(svc, context)
        if result.errors:
            error = "; ".join(result.errors)[:4000]
    except LabgpuError as exc:
        result, error = JobResult(errors=[exc.message]), exc.message
    except Exception as exc:  # a job's bug must not kill the runner; it is logged and recorded
        log.exception("job %s failed", job.name)
        result, error = JobResult(errors=[f"{type(exc).__name__}: {exc}"]), f"{type(exc).__name__}: {exc}"
    finished = now if now is not None else utcnow()
    if not finish(svc, job, owner=owner, now=finished, started=started, error=error):
        result.errors.append("the lease expired while the job ran; another runner may have run it too")
    _record_end(svc, run_id, finished=finished, status=FAILED if error else OK)
    return JobRun(job.name, FAILED if error else OK, result)


def run_once(
    svc: Services,
    *,
    job: str | None = None,
    now: datetime | None = None,
    gpu_source: Callable[[], GpuSource] | None = None,
    agent_transport: httpx.BaseTransport | None = None,
) -> list[JobRun]:
    """Run every job that is due (``labgpu jobs run-once`` from cron), or the one named ``job`` now,
    due or not. Raises BadInput for an unknown job name."""
    if job is not None and job not in JOBS:
        raise BadInput(f"unknown job {job!r}: one of {', '.join(JOBS)}")
    owner = runner_id()
    names = [job] if job is not None else list(JOBS)
    return [
        run_job(
            svc,
            JOBS[n],
            now=now,
            owner=owner,
            force=job is not None,
            gpu_source=gpu_source,
            agent_transport=agent_transport,
        )
        for n in names
    ]


@dataclass(frozen=True)
class JobStatus:
    name: str
    help: str
    every_seconds: float
    last_started_at: datetime | None
    last_finished_at: datetime | None
    last_status: str | None
    last_error: str | None
    next_run_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for k, v in out.items():
            if isinstance(v, datetime):
                out[k] = v.isoformat()
        return out


def job_status(svc: Services) -> list[JobStatus]:
    """Every job with its last run, next due time and lease (jobs that never ran: all None)."""
    with svc.session() as session:
        states = {s.name: s for s in session.scalars(select(JobState).where(JobState.name.in_(list(JOBS))))}
        out = []
        for name, job in JOBS.items():
            s = states.get(name)
            out.append(
                JobStatus(
                    name=name,
                    help=job.help,
                    every_seconds=job.every(svc).total_seconds(),
                    last_started_at=s.last_started_at if s else None,
                    last_finished_at=s.last_finished_at if s else None,
                    last_status=s.last_status if s else None,
                    last_error=s.last_error if s else None,
                    next_run_at=s.next_run_at if s else None,
                    lease_owner=s.lease_owner if s else None,
                    lease_until=s.lease_until if s else None,
                )
            )
        return out


# Inside `labgpu serve` ----------------------------------------------------------------------------

TICK_SECONDS = 15.0


def start_job_runner(services: Services, *, tick: float | None = None) -> Callable[[], None]:
    """Start a daemon thread that runs due jobs every ``tick`` seconds (default: the
    ``jobs_tick_seconds`` setting); return a function that stops it (and waits for a running job to
    finish). Used by ``labgpu serve`` when ``jobs_in_serve`` is on. Several portals on one store may
    each run one: the leases let exactly one of them run a due job."""
    tick = services.settings.jobs_tick_seconds if tick is None else tick
    stop = threading.Event()
    owner = runner_id()

    def loop() -> None:
        log.info("job runner %s started (jobs: %s)", owner, ", ".join(JOBS))
        while not stop.is_set():
            for job in JOBS.values():
                if stop.is_set():
                    break
                try:
                    run = run_job(services, job, owner=owner)
                    if run.status == FAILED:
                        log.warning("job %s failed: %s", job.name, "; ".join(run.result.errors))
                except Exception:  # the store is down, say: keep trying
                    log.exception("job runner: %s could not run", job.name)
            stop.wait(tick)
        log.info("job runner %s stopped", owner)

    thread = threading.Thread(target=loop, name="labgpu-jobs", daemon=True)
    thread.start()

    def stopper() -> None:
        stop.set()
        thread.join(timeout=60)

    return stopper
