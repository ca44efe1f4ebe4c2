"""`labgpu jobs run-once|status`: the periodic jobs (booking starts and ends, idle checks, reconcile).

`labgpu serve` runs them in a thread (setting ``jobs_in_serve``); without it, cron runs
`labgpu jobs run-once` every minute. Both may run at once: a lease in the store keeps one job to one
runner at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from labgpu.cli.context import get_context, print_json
from labgpu.cli.gpu_bookings import JsonOpt, NowOpt, ReplayOpt, clock, show_time

app = typer.Typer(
    help="Periodic jobs: booking starts and ends, idle GPU checks, reconcile.", no_args_is_help=True
)


@app.command("run-once")
def run_once(
    ctx: typer.Context,
    job: Annotated[
        str | None,
        typer.Option("--job", help="Run this job now, due or not (bookings, gpu-idle, reconcile, prune)."),
    ] = None,
    json_out: JsonOpt = False,
    now: NowOpt = None,
    replay: ReplayOpt = None,
) -> None:
    """Run the jobs that are due (for cron: `* * * * * root labgpu jobs run-once`). Exit 1 when one failed."""
    from labgpu.services import ops

    c = get_context(ctx)
    source = None
    if replay is not None:
        from labgpu.gpu.fake import RecordedNvml

        path: Path = replay
        source = lambda: RecordedNvml.from_file(path)  # noqa: E731
    runs = ops.run_once(c.services, job=job, now=clock(now) if now else None, gpu_source=source)
    if json_out:
        print_json([r.as_dict() for r in runs])
    else:
        for r in runs:
            if r.status in (ops.NOT_DUE,) and job is None:
                continue
            style = {ops.OK: "green", ops.FAILED: "red"}.get(r.status, "yellow")
            c.console.print(Text(f"{r.job}: {r.status}", style=style), soft_wrap=True)
            for line in r.result.lines:
                c.console.print(Text(f"  {line}"), soft_wrap=True)
            for line in r.result.errors:
                c.console.print(Text(f"  error: {line}", style="red"), soft_wrap=True)
        if all(r.status == ops.NOT_DUE for r in runs):
            c.console.print("no job is due", soft_wrap=True)
    if any(r.status == ops.FAILED for r in runs):
        raise typer.Exit(1)


@app.command("status")
def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Every job: last run, its outcome, next due time, and who holds its lease."""
    from labgpu.services import ops

    c = get_context(ctx)
    rows = ops.job_status(c.services)
    if json_out:
        print_json([r.as_dict() for r in rows])
        return
    table = Table()
    for col in ("job", "every", "last run", "status", "next run", "lease", "last error"):
        table.add_column(col)
    for r in rows:
        every = (
            f"{r.every_seconds / 60:g} min" if r.every_seconds < 86400 else f"{r.every_seconds / 86400:g} d"
        )
        lease = (
            f"{r.lease_owner} until {show_time(r.lease_until)}" if r.lease_owner and r.lease_until else "-"
        )
        table.add_row(
            r.name,
            every,
            show_time(r.last_started_at) if r.last_started_at else "never",
            Text(r.last_status or "-", style="red" if r.last_status == "failed" else ""),
            show_time(r.next_run_at) if r.next_run_at else "now",
            Text(lease),
            Text((r.last_error or "")[:200]),
        )
    c.console.print(table)
