"""A lab with a day of GPU usage behind it, for the usage tests (web, CLI, browser): a real SQLite store,
one host in shared mode with 8 GPUs and 20 members, and the real job runner (``gpu-idle`` every 5
minutes, then ``usage-rollup``) fed by the FAKE :class:`~labgpu.gpu.fake.ReplayedDay` over a FAKE /proc.
No daemon: the runtime points at a socket that does not exist, so members come from the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import update

from labgpu.gpu.fake import RecordedNvml, ReplayedDay
from labgpu.services.context import Actor, Services
from labgpu.services.ops import _jobs as jobs
from labgpu.services.portal import _accounts as accounts
from labgpu.settings import Settings, load_settings
from labgpu.store import create_engine_for, session_factory, upgrade
from labgpu.store.models import Host, HostKind, Member, Role

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gpu"
# The replayed day: the day before yesterday (UTC), so that the API and pages, which read the real clock,
# find it in their last 7 days.
DAY0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
AFTER = DAY0 + timedelta(days=1, minutes=30)  # "now" for the reports: the day and its rollup are done
INTERVAL = 300  # seconds between samples: 288 runs of the job for the day
PASSWORD = "plum-tractor-71-orbit"
ME = "m01"


@dataclass
class UsageLab:
    settings: Settings
    svc: Services
    day: ReplayedDay
    proc: Path

    def expected_hours(self) -> dict[str, float]:
        """GPU-hours per member by construction of the fake day, sampled as the job samples it."""
        seconds = self.day.gpu_seconds(INTERVAL, range(0, ReplayedDay.DAY_MINUTES, INTERVAL // 60))
        return {m: s / 3600 for m, s in seconds.items()}


def build_lab(tmp: Path, **overrides: object) -> UsageLab:
    settings = load_settings(
        state_dir=str(tmp / "state"),
        runtime_url=f"unix://{tmp}/no-daemon.sock",
        trusted_proxies="",
        gpu_sample_seconds=INTERVAL,
        jobs_in_serve=False,
        **overrides,
    )
    engine = create_engine_for(settings)
    # 300 job runs write the store: without waiting for the disk at each commit (a test's own file).
    sa.event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    upgrade(settings, engine=engine)
    from labgpu.runtime.client import RuntimeClient

    svc = Services(
        settings=settings,
        runtime=RuntimeClient.from_settings(settings),
        sessions=session_factory(engine),
        actor=Actor("root@cli"),
    )
    day = ReplayedDay(RecordedNvml.from_file(FIXTURES / "nvml" / "four-gpus.json").read())
    accounts.create_account(svc, name="boss", password=PASSWORD, role=Role.ADMIN, email="boss@lab.test")
    accounts.create_account(svc, name=ME, password=PASSWORD, role=Role.MEMBER, email="m01@lab.test")
    with svc.session() as session:
        host = Host(name="gpu1", url=None, kind=HostKind.LXD, gpu_mode="shared")
        session.add(host)
        session.flush()
        session.execute(
            update(Member).where(Member.name == ME).values(host_id=host.id, container=ME, uid=70001)
        )
        for i, name in enumerate(day.members[1:], start=70002):
            session.add(Member(name=name, uid=i, host_id=host.id, container=name, gpu_spec="all"))
    return UsageLab(settings, svc, day, day.write_proc(tmp / "proc"))


def replay(lab: UsageLab, start: datetime = DAY0, minutes: range | None = None) -> None:
    """Run the GPU job through the day (every INTERVAL), then the rollup job after it."""
    for minute in minutes if minutes is not None else range(0, ReplayedDay.DAY_MINUTES, INTERVAL // 60):
        lab.day.minute = minute
        run = jobs.run_job(
            lab.svc,
            jobs.JOBS["gpu-idle"],
            now=start + timedelta(minutes=minute),
            force=True,
            gpu_source=lambda: lab.day,
            proc_root=str(lab.proc),
        )
        assert run.status == "ok", run.as_dict()
    run = jobs.run_job(lab.svc, jobs.JOBS["usage-rollup"], now=AFTER, force=True)
    assert run.status == "ok", run.as_dict()
