#!/usr/bin/env python3
"""Benchmark: GPU usage history (targets: one sampling tick under 20 ms; the 30-day lab report under
200 ms) and how much the store grows per GPU-month, on SQLite (WAL, as labgpu runs it) and PostgreSQL.

1. One sampling tick of 8 GPUs x 200 processes of 20 members: the real ``sample_gpus`` (what the
   ``gpu-idle`` job does each minute: members from the store, the FAKE reading's 200 processes
   attributed through a FAKE /proc in a temporary folder, one GPU sample per GPU and one usage sample
   per GPU and member written and COMMITTED). Beside it, the raw way: the same rows written with the
   driver's own executemany and a plain (durable) commit, and, for information, the whole gpu-idle job
   (sampling, fair use, idle check, the job's own bookkeeping).
2. A month (30 days and 13 h 50 min) of minute samples for 8 GPUs x 20 members (on each GPU 2 or 3
   members at a time, changing every 2 hours), rolled up by the real rollup as the job leaves it (hours
   up to the last complete one, days up to the last midnight), then the 30-day lab report (by member,
   by GPU, by host: what /admin/usage shows) timed. Beside it: the report built from every rollup row
   in Python (labgpu's way before the report grouped in SQL), and the raw way: one GROUP BY member over
   the raw samples of the 30 days (no rollups).
3. Store growth: rows and bytes (tables with their indexes) of raw samples, hourly and daily rows per
   GPU-month.

    .venv/bin/python bench/gpu_usage.py                     # SQLite, and PostgreSQL when
    LABGPU_TEST_POSTGRES_URL=postgresql+psycopg://... .venv/bin/python bench/gpu_usage.py
    .venv/bin/python bench/gpu_usage.py --rounds 50 --days 30 --backend sqlite
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sqlalchemy as sa

from labgpu.gpu.fake import RecordedNvml, ReplayedDay
from labgpu.gpu.nvml import GpuProcessSample
from labgpu.services.context import Actor, Services
from labgpu.services.gpus import _history as history
from labgpu.services.gpus import _idle as idle
from labgpu.services.gpus import _report as report
from labgpu.services.ops import _jobs as jobs
from labgpu.settings import Settings
from labgpu.store import create_engine_for, session_factory, upgrade
from labgpu.store.models import GpuSample, Host, HostKind, Member
from labgpu.store.usage_models import UsageDaily, UsageHourly, UsageSample

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gpu" / "nvml" / "four-gpus.json"
GPUS, MEMBERS = 8, [f"m{n:02d}" for n in range(1, 21)]
START = datetime(2026, 3, 1, tzinfo=UTC)


@contextmanager
def _database(backend: str, tmp: Path) -> Iterator[str | None]:
    """None (SQLite in the state dir) or a fresh PostgreSQL database's URL, dropped afterwards."""
    if backend == "sqlite":
        yield None
        return
    base = os.environ["LABGPU_TEST_POSTGRES_URL"]
    name = f"labgpu_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _store(tmp: Path, url: str | None) -> Services:
    settings = Settings(state_dir=tmp / "state", database_url=url, runtime_url=f"unix://{tmp}/none.sock")
    engine = create_engine_for(settings)
    upgrade(settings, engine=engine)
    from labgpu.runtime.client import RuntimeClient
    from labgpu.runtime.endpoint import Endpoint

    return Services(
        settings=settings,
        runtime=RuntimeClient(Endpoint.unix(tmp / "none.sock"), timeout=1),
        sessions=session_factory(engine),
        actor=Actor("bench"),
    )


class Timings(list[float]):
    """Wall-clock milliseconds of each round, with the process's own CPU milliseconds beside them
    (``cpu``): on a shared machine the wall clock also counts the time other processes held the cores;
    the CPU time is what the round itself computed (it leaves out waits for the disk and, on PostgreSQL,
    the server's own work)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: list[float] = []


def _ms(samples: Timings) -> str:
    p90 = sorted(samples)[int(len(samples) * 0.9)]
    return (
        f"median {statistics.median(samples):7.2f} ms, p90 {p90:7.2f} ms"
        f" (CPU median {statistics.median(samples.cpu):7.2f} ms)"
    )


def _timed(rounds: int, step: Callable[[int], object]) -> Timings:
    out = Timings()
    for i in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        step(i)
        out.append((time.perf_counter() - t) * 1000)
        out.cpu.append((time.process_time() - c) * 1000)
    return out


# 1. The sampling tick -----------------------------------------------------------------------------


def tick(tmp: Path, url: str | None, rounds: int, per_gpu: int) -> dict[str, Timings]:
    day = ReplayedDay(RecordedNvml.from_file(FIXTURE).read(), gpus=GPUS, members=MEMBERS)
    reading = day.read()
    procs: dict[int, str] = {}
    gpus = []
    for g in reading.gpus:
        mine = []
        for k in range(per_gpu):
            pid = 30000 + g.index * per_gpu + k
            procs[pid] = MEMBERS[(g.index * per_gpu + k) % len(MEMBERS)]
            mine.append(GpuProcessSample(pid, (512 + k) * 2**20))
        gpus.append(replace(g, processes=tuple(mine), utilization=50))
    source = RecordedNvml(replace(reading, gpus=tuple(gpus)))
    proc = tmp / "proc"
    for pid, member in procs.items():
        d = proc / str(pid)
        d.mkdir(parents=True)
        (d / "cgroup").write_text(f"0::/lxc.payload.{member}/.lxc\n")
        (d / "comm").write_text("python3\n")
        (d / "status").write_text(f"Name:\tpython3\nNSpid:\t{pid}\t{pid - 29000}\n")
    svc = _store(tmp, url)
    with svc.session() as session:
        host = Host(name="gpu1", url=None, kind=HostKind.LXD, gpu_mode="shared")
        session.add(host)
        session.flush()
        for i, name in enumerate(MEMBERS):
            session.add(Member(name=name, uid=70001 + i, host_id=host.id, container=name, gpu_spec="all"))

    def sample(i: int) -> None:
        result = idle.sample_gpus(svc, source=source, now=START + timedelta(minutes=i), proc_root=proc)
        assert result.samples == GPUS and len(result.seen) == GPUS * min(per_gpu, len(MEMBERS)), result

    out = {"labgpu": _timed(rounds, sample)}
    # The raw way: the same rows, the driver's executemany, a plain commit (waits for the disk).
    last = START + timedelta(minutes=rounds - 1)
    with svc.engine.connect() as conn:
        usage = [
            tuple(r.values())
            for r in conn.execute(sa.select(*_cols(UsageSample)).where(UsageSample.at == last)).mappings()
        ]
        gpu_rows = [tuple(r.values()) for r in conn.execute(sa.select(*_cols(GpuSample)).where(GpuSample.at == last)).mappings()]  # fmt: skip
    raw = svc.engine.raw_connection()
    mark = "?" if svc.engine.dialect.name == "sqlite" else "%s"

    def insert_raw(_: int) -> None:
        cursor = raw.cursor()
        for table, rows in ((GpuSample, gpu_rows), (UsageSample, usage)):
            names = [c.name for c in _cols(table)]
            cursor.executemany(
                f"INSERT INTO {table.__tablename__} ({', '.join(names)}) VALUES ({', '.join([mark] * len(names))})",
                rows,
            )
        raw.commit()

    out["raw"] = _timed(rounds, insert_raw)
    raw.close()

    def job(i: int) -> None:
        run = jobs.run_job(
            svc,
            jobs.JOBS["gpu-idle"],
            now=START + timedelta(days=1, minutes=i),
            force=True,
            gpu_source=lambda: source,
            proc_root=str(proc),
        )
        assert run.status == "ok", run.as_dict()

    out["job"] = _timed(max(5, rounds // 2), job)
    svc.engine.dispose()
    return out


def _cols(table: type[Any]) -> list[Any]:
    return [c for c in table.__table__.c if c.name != "id"]


# 2. A month of samples, the 30-day report ---------------------------------------------------------


def month(tmp: Path, url: str | None, days: int, rounds: int) -> dict[str, Any]:
    svc = _store(tmp, url)
    rng = random.Random(30)
    now = START + timedelta(days=days, hours=13, minutes=50)
    rows_written = 0
    t = time.perf_counter()
    minute_total = int((now - START).total_seconds() // 60)
    for block_start in range(0, minute_total, 120):  # every 2 hours, new members on each GPU
        on = {g: rng.sample(MEMBERS, rng.choice((2, 3))) for g in range(GPUS)}
        rows: list[dict[str, object]] = []
        for minute in range(block_start, min(block_start + 120, minute_total)):
            at = START + timedelta(minutes=minute)
            for g, members in on.items():
                util = rng.randrange(0, 100)
                for m in members:
                    rows.append(
                        {"at": at, "host": f"gpu{1 + g // 4}", "gpu_index": g % 4, "member": m,
                         "seconds": 60, "memory_mib": rng.randrange(512, 40960), "utilization": util,
                         "processes": 1}
                    )  # fmt: skip
        with svc.session() as session:
            history.store_usage(session, rows)
        rows_written += len(rows)
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    hours, daily = history.roll_up(svc, now=now)
    rollup_s = time.perf_counter() - t
    out: dict[str, Any] = {"raw_rows": rows_written, "write_s": write_s, "rollup_s": rollup_s}
    out["hourly_rows"], out["daily_rows"] = hours, daily
    span = timedelta(days=30)
    reports: dict[str, report.UsageReport] = {}
    for by in report.BY:

        def grouped(_: int, by: str = by) -> None:
            reports[by] = report.usage_report(svc, since=span, by=by, now=now)

        out[f"report_{by}"] = _timed(rounds, grouped)
    start, end = reports["member"].since, reports["member"].until

    def every_row(_: int) -> None:
        with svc.session() as session:
            rows = report.collect(session, start, end)
        reports["every"] = report.build_report(rows, since=start, until=end, by="member")

    out["report_every_row"] = _timed(rounds, every_row)
    assert reports["every"] == reports["member"], "the grouped report differs from every row's"

    def raw_group_by(_: int) -> None:
        with svc.engine.connect() as conn:
            got = conn.execute(
                sa.select(UsageSample.member, sa.func.sum(UsageSample.seconds))
                .where(UsageSample.at >= start, UsageSample.at < end)
                .group_by(UsageSample.member)
            ).all()
        reports["raw"] = got  # type: ignore[assignment]

    out["report_raw"] = _timed(max(3, rounds // 3), raw_group_by)
    raw_total = sum(int(s) for _, s in reports["raw"])  # type: ignore[attr-defined]
    assert raw_total == reports["member"].total.seconds, (raw_total, reports["member"].total.seconds)
    out["sizes"] = _sizes(svc)
    out["gpu_months"] = GPUS * (now - START).total_seconds() / 86400 / 30
    svc.engine.dispose()
    return out


def _sizes(svc: Services) -> dict[str, tuple[int, int]]:
    sizes = {}
    with svc.engine.connect() as conn:
        for table in (UsageSample, UsageHourly, UsageDaily):
            name = table.__tablename__
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            if conn.dialect.name == "sqlite":
                size = conn.execute(
                    sa.text("SELECT SUM(pgsize) FROM dbstat WHERE name = :n OR name LIKE :ix"),
                    {"n": name, "ix": f"%{name}%"},
                ).scalar_one()
            else:
                size = conn.execute(sa.text("SELECT pg_total_relation_size(:n)"), {"n": name}).scalar_one()
            sizes[name] = (int(count), int(size or 0))
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--per-gpu", type=int, default=25, help="processes per GPU (8 GPUs)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if "postgresql" in backends and not os.environ.get("LABGPU_TEST_POSTGRES_URL"):
        print("PostgreSQL: skipped (set LABGPU_TEST_POSTGRES_URL, as scripts/start-postgres prints)")
        backends.remove("postgresql")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp, _database(backend, Path(tmp)) as url:
            t = tick(Path(tmp) / "tick", url, args.rounds, args.per_gpu)
            print(
                f"[{backend}] sampling tick, {GPUS} GPUs x {GPUS * args.per_gpu} processes, {args.rounds} rounds:"
            )
            print(f"  labgpu sample_gpus (with its commit): {_ms(t['labgpu'])}")
            print(f"  raw: the same rows, executemany + commit: {_ms(t['raw'])}")
            print(f"  the whole gpu-idle job (for information): {_ms(t['job'])}")
            wall, cpu = statistics.median(t["labgpu"]), statistics.median(t["labgpu"].cpu)
            print(
                f"  target: tick under 20 ms: wall {'met' if wall < 20 else 'NOT met'}, CPU {'met' if cpu < 20 else 'NOT met'}"
            )
        with tempfile.TemporaryDirectory() as tmp, _database(backend, Path(tmp)) as url:
            m = month(Path(tmp) / "month", url, args.days, max(5, args.rounds // 3))
        print(
            f"[{backend}] {args.days} days 13 h 50 min of minute samples, {GPUS} GPUs x {len(MEMBERS)} members:"
        )
        print(f"  {m['raw_rows']:,} raw rows written in {m['write_s']:.1f} s; rolled up in {m['rollup_s']:.1f} s "
              f"({m['hourly_rows']:,} hourly, {m['daily_rows']:,} daily rows)")  # fmt: skip
        for by in report.BY:
            print(f"  30-day report by {by:<6}: {_ms(m[f'report_{by}'])}")
        print(f"  every rollup row into Python (before): {_ms(m['report_every_row'])}")
        print(f"  raw: GROUP BY member over the raw samples: {_ms(m['report_raw'])}")
        wall = max(statistics.median(m[f"report_{by}"]) for by in report.BY)
        cpu = max(statistics.median(m[f"report_{by}"].cpu) for by in report.BY)
        print(
            f"  target: report under 200 ms: wall {'met' if wall < 200 else 'NOT met'}, CPU {'met' if cpu < 200 else 'NOT met'}"
        )
        print(f"[{backend}] store growth per GPU-month (table and its indexes):")
        for name, (rows, size) in m["sizes"].items():
            print(
                f"  {name:<14} {rows / m['gpu_months']:>10,.0f} rows  {size / m['gpu_months'] / 2**20:>8.2f} MiB"
            )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
