"""`labgpu gpu mode|assign|unassign|book|bookings|cancel|extend|approve|reject|idle`: GPU modes and bookings.

Commands of the `labgpu gpu` app of :mod:`._inventory`, listed after its own. Times are read and shown in this
machine's local time zone unless they carry their own (``2026-03-02T14:00+08:00``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from labgpu.cli.context import CliContext, get_context, print_json
from labgpu.cli.gpus._inventory import app
from labgpu.cli.options import JsonOpt, NowOpt, ReplayOpt, clock, local_tz, show_time
from labgpu.domain.bookings import parse_time
from labgpu.errors import BadInput

if TYPE_CHECKING:
    from labgpu.gpu.nvml import GpuSource


def _gpu_map(c: CliContext, replay: Path | None) -> dict[int, str] | None:
    if replay is None:
        return None
    from labgpu.gpu.fake import RecordedNvml
    from labgpu.services.gpus import gpu_map

    return gpu_map(c.services, RecordedNvml.from_file(replay))


def _recording(replay: Path | None) -> GpuSource | None:
    if replay is None:
        return None
    from labgpu.gpu.fake import RecordedNvml

    return RecordedNvml.from_file(replay)


def _default_member(c: CliContext) -> str:
    """The member named like the person running the command (their sudo user), if there is one."""
    from labgpu.services.members import invoking_member

    who = invoking_member(c.services)
    if who is None:
        raise BadInput("which member is the booking for? give --member NAME")
    return who


# Modes --------------------------------------------------------------------------------------------


@app.command("mode")
def mode(
    ctx: typer.Context,
    new_mode: Annotated[
        str | None,
        typer.Argument(metavar="[shared|assigned|booked]", help="The mode to switch to; none: show it."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="The host (default: this machine's daemon).")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Leaving booked mode: cancel the bookings that hold GPUs.")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Show or switch a host's GPU mode: shared (every container gets every GPU), assigned (the admin
    attaches chosen GPUs: gpu assign), booked (GPUs attached only for bookings: gpu book)."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    svc = c.services
    if new_mode is None:
        name, current = gpus_svc.get_mode(svc, host=host)
        if json_out:
            print_json({"host": name, "mode": current})
        else:
            c.console.print(f"{name}: {current}", soft_wrap=True)
        return
    report = gpus_svc.set_mode(svc, new_mode, host=host, force=force)
    if json_out:
        print_json(report.as_dict())
    else:
        verb = "stays" if report.old == report.new else f"switched from {report.old} to"
        c.console.print(Text(f"{report.host}: GPU mode {verb} {report.new}"), soft_wrap=True)
        if report.cancelled_bookings:
            c.console.print(f"{report.cancelled_bookings} booking(s) cancelled", soft_wrap=True)
        for m in report.members:
            if m.applied != "unchanged":
                note = f" ({m.note})" if m.note else ""
                c.console.print(
                    Text(f"  {m.member}: GPUs {m.old} -> {m.new}: {m.applied}{note}"), soft_wrap=True
                )
        for o in report.detached:
            c.console.print(Text(f"  {o.member}: {o.message}"), soft_wrap=True)
        if report.detach_error:
            c.console.print(Text(f"  {report.detach_error}"), soft_wrap=True)
    if report.failed:
        raise typer.Exit(1)


@app.command("assign")
def assign(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="The member.")],
    gpus: Annotated[str, typer.Argument(help="GPU indexes, e.g. 0,1.")],
    json_out: JsonOpt = False,
) -> None:
    """Attach chosen GPUs to a member's container (host in assigned mode); live when it runs."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    result = gpus_svc.assign(c.services, member, gpus)
    _print_member_gpus(c, result, json_out)


@app.command("unassign")
def unassign(
    ctx: typer.Context, member: Annotated[str, typer.Argument(help="The member.")], json_out: JsonOpt = False
) -> None:
    """Take a member's assigned GPUs away (host in assigned mode); live when the container runs."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    _print_member_gpus(c, gpus_svc.unassign(c.services, member), json_out)


def _print_member_gpus(c: CliContext, result: object, json_out: bool) -> None:
    from labgpu.services.gpus import MemberGpus

    assert isinstance(result, MemberGpus)
    if json_out:
        print_json(result.as_dict())
        return
    note = f" ({result.note})" if result.note else ""
    c.console.print(
        Text(f"{result.member}: GPUs {result.old} -> {result.new}: {result.applied}{note}"), soft_wrap=True
    )


# Bookings -----------------------------------------------------------------------------------------


@app.command("book")
def book(
    ctx: typer.Context,
    gpus: Annotated[str, typer.Option("--gpus", help="How many GPUs (2), or which (0,2; one GPU: 3,).")],
    until: Annotated[
        str, typer.Option("--until", help="End: +3h (after the start), 18:00, 2026-03-02 18:00, ISO 8601.")
    ],
    start: Annotated[str, typer.Option("--from", help="Start: now, +1h, 14:00, 2026-03-02 14:00.")] = "now",
    member: Annotated[
        str | None, typer.Option(help="Whom the booking is for (default: you, if you are a member).")
    ] = None,
    note: Annotated[str | None, typer.Option(help="What it is for (shown to admins).")] = None,
    json_out: JsonOpt = False,
    now: NowOpt = None,
    replay: ReplayOpt = None,
) -> None:
    """Book GPUs for a time window. Times are rounded to whole slots (booking_slot_minutes)."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    moment = clock(now)
    tz = local_tz()
    start_at = parse_time(start, now=moment, tz=tz)
    end_at = parse_time(until, now=moment, tz=tz, base=start_at)
    who = member or _default_member(c)
    view = gpus_svc.book(
        c.services,
        member=who,
        gpus=gpus,
        start=start_at,
        end=end_at,
        note=note,
        now=moment,
        gpus_on_host=_gpu_map(c, replay),
    )
    if json_out:
        print_json(view.as_dict())
        return
    rounded = (view.start, view.end) != (start_at, end_at)
    status = (
        "pending: waits for an admin (labgpu gpu approve)"
        if view.status == "pending"
        else "approved: the GPUs are attached at its start"
    )
    c.console.print(
        Text(
            f"booking {view.id}: GPU {','.join(map(str, view.gpus))} on {view.host} for {view.member}, "
            f"{show_time(view.start)} to {show_time(view.end)}"
            + (f" (rounded to {c.settings.booking_slot_minutes}-minute slots)" if rounded else "")
            + f"; {status}"
        ),
        soft_wrap=True,
    )


@app.command("bookings")
def list_bookings(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Also ended, cancelled and rejected ones.")] = False,
    member: Annotated[str | None, typer.Option(help="Only this member's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Bookings that hold GPUs (pending, approved, active), by start time."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    views = gpus_svc.list_bookings(c.services, member=member, include_all=show_all)
    if json_out:
        print_json([v.as_dict() for v in views])
        return
    if not views:
        c.console.print(
            "no bookings" if show_all else "no bookings hold GPUs (--all shows past ones)", soft_wrap=True
        )
        return
    table = Table()
    for col in ("id", "member", "host", "GPUs", "from", "until", "status", "note"):
        table.add_column(col, justify="right" if col == "id" else "left")
    for v in views:
        table.add_row(
            str(v.id),
            Text(v.member),
            Text(v.host),
            ",".join(map(str, v.gpus)),
            show_time(v.start),
            show_time(v.end),
            v.status,
            Text(v.note or ""),
        )
    c.console.print(table)


@app.command("cancel")
def cancel(
    ctx: typer.Context,
    booking_id: Annotated[int, typer.Argument(metavar="ID", help="The booking.")],
    json_out: JsonOpt = False,
    now: NowOpt = None,
    replay: ReplayOpt = None,
) -> None:
    """Cancel a booking; one that runs ends now and its GPUs are detached."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    done = gpus_svc.cancel(c.services, booking_id, now=clock(now))
    detach = gpus_svc.detach_cancelled(c.services, done, source=_recording(replay))
    if json_out:
        print_json({**done.booking.as_dict(), **detach.as_dict()})
        return
    verb = "ended now" if done.ended_early else "cancelled"
    c.console.print(f"booking {booking_id} {verb}", soft_wrap=True)
    for o in detach.outcomes:
        c.console.print(Text(f"  {o.member}: {o.message}"), soft_wrap=True)
    if detach.note:
        c.console.print(Text(f"  {detach.note}"), soft_wrap=True)
    if detach.failed:
        raise typer.Exit(1)


@app.command("extend")
def extend(
    ctx: typer.Context,
    booking_id: Annotated[int, typer.Argument(metavar="ID", help="The booking.")],
    until: Annotated[
        str, typer.Option("--until", help="New end: +2h (after the current end), 20:00, a date.")
    ],
    json_out: JsonOpt = False,
    now: NowOpt = None,
) -> None:
    """Move a booking's end later (checked like a new booking: conflicts and quotas)."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    moment = clock(now)
    current = gpus_svc.get_booking(c.services, booking_id)
    new_end = parse_time(until, now=moment, tz=local_tz(), base=current.end)
    view = gpus_svc.extend(c.services, booking_id, until=new_end, now=moment)
    if json_out:
        print_json(view.as_dict())
        return
    c.console.print(f"booking {view.id} now ends {show_time(view.end)}", soft_wrap=True)


@app.command("approve")
def approve(
    ctx: typer.Context,
    booking_id: Annotated[int, typer.Argument(metavar="ID", help="The booking.")],
    json_out: JsonOpt = False,
    now: NowOpt = None,
) -> None:
    """Approve a pending booking (when booking_approval is on); mails the member."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    view = gpus_svc.approve(c.services, booking_id, now=clock(now))
    if json_out:
        print_json(view.as_dict())
        return
    c.console.print(
        f"booking {view.id} approved ({view.member}, {show_time(view.start)} to {show_time(view.end)})",
        soft_wrap=True,
    )


@app.command("reject")
def reject(
    ctx: typer.Context,
    booking_id: Annotated[int, typer.Argument(metavar="ID", help="The booking.")],
    reason: Annotated[str | None, typer.Option(help="Why (mailed to the member).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Reject a pending booking, freeing its GPUs; mails the member the reason."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    view = gpus_svc.reject(c.services, booking_id, reason=reason)
    if json_out:
        print_json(view.as_dict())
        return
    c.console.print(f"booking {view.id} rejected", soft_wrap=True)


@app.command("idle")
def idle(ctx: typer.Context, json_out: JsonOpt = False, now: NowOpt = None) -> None:
    """Booked or assigned GPUs that are idle now (from the samples the job runner takes)."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    found = gpus_svc.idle_gpus(c.services, now=clock(now))
    if json_out:
        print_json([g.as_dict() for g in found])
        return
    if not found:
        c.console.print("no held GPU is idle", soft_wrap=True)
        return
    for g in found:
        what = f"booking {g.booking}" if g.booking is not None else "assigned"
        c.console.print(
            Text(
                f"GPU {g.gpu} on {g.host}: {g.member} ({what}), idle since {show_time(g.since)} ({g.minutes} min)"
            ),
            soft_wrap=True,
        )
