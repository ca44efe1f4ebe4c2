"""`labgpu gpu usage` and `labgpu gpu limits`: who used how many GPU-hours, and the fair-use limits.

Commands of the `labgpu gpu` app of :mod:`._inventory`. The figures come from the usage history in the
store (the job runner samples every host's GPUs), so these commands work on any machine with the store.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.gpus._inventory import app
from labgpu.cli.options import JsonOpt, NowOpt, clock, local_tz
from labgpu.errors import BadInput


@app.command("usage")
def usage(
    ctx: typer.Context,
    since: Annotated[str, typer.Option(help="How far back: 24h, 7d, 4w (to the whole hour).")] = "7d",
    by: Annotated[str, typer.Option(help="Group by member, gpu (host/index) or host.")] = "member",
    member: Annotated[str | None, typer.Option(help="Only this member's usage.")] = None,
    json_out: JsonOpt = False,
    csv_out: Annotated[bool, typer.Option("--csv", help="Print CSV.")] = False,
    now: NowOpt = None,
) -> None:
    """GPU-hours, memory held and mean utilization per member, GPU or host over a time span, from the
    usage history the job runner records."""
    from labgpu.services import gpus as gpus_svc

    if json_out and csv_out:
        raise BadInput("give --json or --csv, not both")
    c = get_context(ctx)
    report = gpus_svc.usage_report(
        c.store_services, since=since, by=by, member=member, now=clock(now), tz=local_tz()
    )
    if json_out:
        print_json(report.as_dict())
        return
    if csv_out:
        typer.echo(report.to_csv(), nl=False)
        return
    tz = local_tz()
    title = (
        f"GPU usage {report.since.astimezone(tz):%Y-%m-%d %H:%M} - {report.until.astimezone(tz):%Y-%m-%d %H:%M}"
        + (f" of {member}" if member else "")
    )
    table = Table(title=title)
    for name in (by, "GPU-hours", "mean util %", "mean memory", "memory GiB-h"):
        table.add_column(name, justify="left" if name == by else "right")
    for line in report.lines:
        d = line.as_dict()
        util = "-" if d["mean_utilization"] is None else f"{d['mean_utilization']:.0f}"
        table.add_row(
            line.label,
            f"{d['gpu_hours']:.2f}",
            util,
            f"{d['mean_memory_mib'] / 1024:.1f} GiB",
            f"{d['memory_gib_hours']:.1f}",
        )
    table.add_section()
    table.add_row("total", f"{report.total.gpu_hours:.2f}", "", "", "")
    c.console.print(table)
    if not report.lines:
        c.console.print("no GPU usage recorded in this time span", soft_wrap=True)


@app.command("limits")
def limits(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="The member.")],
    gpus: Annotated[
        int | None,
        typer.Option("--gpus", min=-1, help="Most GPUs at once (shared mode); -1: the lab's default."),
    ] = None,
    gpu_hours: Annotated[
        float | None,
        typer.Option(
            "--gpu-hours-per-week", help="Most GPU-hours in 7 days (shared mode); -1: the lab's default."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show or set a member's own fair-use limits (without options: show the limits in force)."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    svc = c.store_services
    if gpus is None and gpu_hours is None:
        view = gpus_svc.usage_settings(svc, member)
    else:
        changes: dict[str, object] = {}
        if gpus is not None:
            changes["max_gpus"] = None if gpus == -1 else gpus
        if gpu_hours is not None:
            changes["max_gpu_hours_week"] = None if gpu_hours == -1 else gpu_hours
        view = gpus_svc.set_usage_settings(svc, member, **changes)  # type: ignore[arg-type]
    if json_out:
        print_json(view.as_dict())
        return

    def show(value: float | None, own: bool) -> str:
        text = "no limit" if value is None else f"{value:g}"
        return text + (" (own)" if own else " (lab default)")

    c.console.print(f"{member}: GPUs at once: {show(view.max_gpus, view.own_max_gpus)}", soft_wrap=True)
    c.console.print(
        f"{member}: GPU-hours per 7 days: {show(view.max_gpu_hours_week, view.own_max_gpu_hours_week)}",
        soft_wrap=True,
    )
