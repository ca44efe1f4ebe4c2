#!/usr/bin/env python3
"""Benchmark: GPU usage history (targets: one sampling tick under 20 ms; the 30-day lab report under
200 ms) and how much the store grows per GPU-month.

1. One sampling tick of 8 GPUs x 200 processes of 20 members: the FAKE ReplayedDay's GPUs (the recorded
   fixture's model) with 25 processes per GPU, each with a /proc entry in a temporary folder; the real
   code takes the inventory (attribution of every pid), builds the usage rows and stores them (SQLite,
   one transaction), as the GPU job does each minute.
2. A month (30 days) of minute samples for 8 GPUs x 20 members (on each GPU 2 or 3 members at a time,
   changing every 2 hours) written to a fresh SQLite store, rolled up into hours and days by the real
   rollup, then the 30-day lab report (by member, by GPU, by host: what /admin/usage shows) timed.
3. Store growth: rows and bytes (SQLite's dbstat) of raw samples, hourly and daily rows per GPU-month.

    .venv/bin/python bench/gpu_usage.py
    .venv/bin/python bench/gpu_usage.py --rounds 50 --days 30
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import sqlalchemy as sa

from labgpu.gpu.fake import RecordedNvml, ReplayedDay
from labgpu.gpu.inventory import take_inventory
from labgpu.gpu.nvml import GpuProcessSample
from labgpu.services.context import Actor, Services
from labgpu.services.gpus import _history as history
from labgpu.services.gpus import _report as report
from labgpu.settings import Settings
from labgpu.store import create_engine_for, session_factory, upgrade
from labgpu.store.usage_models import UsageDaily, UsageHourly, UsageSample

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gpu" / "nvml" / "four-gpus.json"
GPUS, MEMBERS = 8, [f"m{n:02d}" for n in range(1, 21)]


def _store(tmp: Path) -> Services:
    settings = Settings(state_dir=tmp / "state")
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


def tick(tmp: Path, rounds: int, per_gpu: int) -> tuple[list[float], list[float]]:
    day = ReplayedDay(RecordedNvml.from_file(FIXTURE).read(), gpus=GPUS, members=MEMBERS)
    reading = day.read()
    from dataclasses import replace

    procs, owners = {}, {}
    gpus = []
    for g in reading.gpus:
        mine = []
        for k in range(per_gpu):
            pid = 30000 + g.index * per_gpu + k
            member = MEMBERS[(g.index * per_gpu + k) % len(MEMBERS)]
            procs[pid] = member
            mine.append(GpuProcessSample(pid, (512 + k) * 2**20))
        gpus.append(replace(g, processes=tuple(mine)))
    source = RecordedNvml(replace(reading, gpus=tuple(gpus)))
    proc = tmp / "proc"
    for pid, member in procs.items():
        d = proc / str(pid)
        d.mkdir(parents=True)
        (d / "cgroup").write_text(f"0::/lxc.payload.{member}/.lxc\n")
        (d / "comm").write_text("python3\n")
        (d / "status").write_text(f"NSpid:\t{pid}\t{pid - 29000}\n")
        owners[("default", member)] = member
    svc = _store(tmp)
    compute, total = [], []
    now = datetime(2026, 3, 1, tzinfo=UTC)
    for i in range(rounds):
        started = time.perf_counter()
        inv = take_inventory(source, owners=owners, proc_root=proc)
        rows, seen = history.usage_rows(inv, host="gpu1", now=now + timedelta(minutes=i), seconds=60)
        middle = time.perf_counter()
        with svc.session() as session:
            history.store_usage(session, rows)
        ended = time.perf_counter()
        compute.append((middle - started) * 1000)
        total.append((ended - started) * 1000)
    assert len(rows) == GPUS * min(per_gpu, len(MEMBERS)) and len(seen) == len(rows)
    svc.engine.dispose()
    return compute, total


def month(tmp: Path, days: int, rounds: int) -> dict[str, float]:
    svc = _store(tmp)
    rng = random.Random(30)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows_written = 0
    t = time.perf_counter()
    for d in range(days):
        rows: list[dict[str, object]] = []
        for block in range(12):  # every 2 hours, new members on each GPU
            on = {g: rng.sample(MEMBERS, rng.choice((2, 3))) for g in range(GPUS)}
            for minute in range(block * 120, block * 120 + 120):
                at = start + timedelta(days=d, minutes=minute)
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
    now = start + timedelta(days=days, minutes=30)
    hours, daily = history.roll_up(svc, now=now)
    rollup_s = time.perf_counter() - t
    timings: dict[str, list[float]] = {"member": [], "gpu": [], "host": []}
    for _ in range(rounds):
        for by in timings:
            t = time.perf_counter()
            r = report.usage_report(svc, since=f"{days}d", by=by, now=now)
            timings[by].append((time.perf_counter() - t) * 1000)
            assert r.lines
    total = r.total.seconds
    assert total == rows_written * 60, (total, rows_written)
    sizes = {}
    with svc.engine.connect() as conn:
        for table in (UsageSample, UsageHourly, UsageDaily):
            name = table.__tablename__
            count = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            size = conn.execute(
                sa.text("SELECT SUM(pgsize) FROM dbstat WHERE name = :n OR name LIKE :ix"),
                {"n": name, "ix": f"%{name}%"},
            ).scalar_one()
            sizes[name] = (count, size or 0)
    svc.engine.dispose()
    gpu_months = GPUS * days / 30
    out = {
        "raw_rows": rows_written,
        "write_s": write_s,
        "rollup_s": rollup_s,
        "hourly_rows": hours,
        "daily_rows": daily,
    }
    for by, ms in timings.items():
        out[f"report_{by}_median_ms"] = statistics.median(ms)
        out[f"report_{by}_max_ms"] = max(ms)
    for name, (count, size) in sizes.items():
        out[f"{name}_rows_per_gpu_month"] = count / gpu_months
        out[f"{name}_bytes_per_gpu_month"] = size / gpu_months
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-gpu", type=int, default=25, help="processes per GPU (8 GPUs)")
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        compute, total = tick(Path(tmp) / "tick", args.rounds, args.per_gpu)
        print(f"sampling tick, {GPUS} GPUs x {GPUS * args.per_gpu} processes, {args.rounds} rounds:")
        print(
            f"  inventory + usage rows: median {statistics.median(compute):.2f} ms, max {max(compute):.2f} ms"
        )
        print(f"  with the store write:   median {statistics.median(total):.2f} ms, max {max(total):.2f} ms")
        print(f"  target: under 20 ms: {'met' if statistics.median(total) < 20 else 'NOT met'}")
        m = month(Path(tmp) / "month", args.days, max(3, args.rounds // 4))
    print(f"{args.days} days of minute samples, {GPUS} GPUs x {len(MEMBERS)} members:")
    print(f"  {m['raw_rows']:,} raw rows written in {m['write_s']:.1f} s; rolled up in {m['rollup_s']:.1f} s "
          f"({m['hourly_rows']:,} hourly, {m['daily_rows']:,} daily rows)")  # fmt: skip
    for by in ("member", "gpu", "host"):
        print(f"  {args.days}-day report by {by}: median {m[f'report_{by}_median_ms']:.1f} ms, "
              f"max {m[f'report_{by}_max_ms']:.1f} ms")  # fmt: skip
    print(f"  target: under 200 ms: {'met' if m['report_member_median_ms'] < 200 else 'NOT met'}")
    print("store growth per GPU-month (SQLite, table and its indexes):")
    for name in ("usage_samples", "usage_hourly", "usage_daily"):
        rows, size = m[f"{name}_rows_per_gpu_month"], m[f"{name}_bytes_per_gpu_month"]
        print(f"  {name:<14} {rows:>10,.0f} rows  {size / 2**20:>8.2f} MiB")


if __name__ == "__main__":
    main()
