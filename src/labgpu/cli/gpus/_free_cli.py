"""`labgpu gpu notify-free|free-requests|notify-free-cancel`: "tell me when N GPUs are free".

Commands of the `labgpu gpu` app of :mod:`._inventory`. The rules (what counts as free, one notification,
the expiry) are :mod:`labgpu.services.gpus._free_requests`'s."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from labgpu.cli.context import get_context, print_json
from labgpu.cli.gpus._bookings import _default_member
from labgpu.cli.gpus._inventory import app
from labgpu.cli.options import JsonOpt, NowOpt, clock, show_time


@app.command("notify-free")
def notify_free(
    ctx: typer.Context,
    count: Annotated[int, typer.Argument(metavar="N", help="How many GPUs must be free at once.")],
    host: Annotated[str | None, typer.Option(help="On this host (default: the member's own).")] = None,
    member: Annotated[
        str | None, typer.Option(help="Whom to tell (default: you, if you are a member).")
    ] = None,
    hours: Annotated[
        float | None,
        typer.Option(help="Stop waiting after this many hours (default and most: gpu_free_request_hours)."),
    ] = None,
    json_out: JsonOpt = False,
    now: NowOpt = None,
) -> None:
    """Tell a member once (through their notification channels) when N GPUs are free on a host."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    who = member or _default_member(c)
    view = gpus_svc.ask_when_free(c.services, member=who, count=count, host=host, hours=hours, now=clock(now))
    if json_out:
        print_json(view.as_dict())
        return
    c.console.print(
        Text(
            f"request {view.id}: {view.member} is told once when {view.count} GPU(s) are free on {view.host} "
            f"(until {show_time(view.expires)}; cancel: labgpu gpu notify-free-cancel {view.id})"
        ),
        soft_wrap=True,
    )


@app.command("free-requests")
def free_requests(
    ctx: typer.Context,
    show_all: Annotated[bool, typer.Option("--all", help="Also sent, expired and cancelled ones.")] = False,
    member: Annotated[str | None, typer.Option(help="Only this member's.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Requests to be told when GPUs are free: the waiting ones, newest first."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    views = gpus_svc.list_free_requests(c.services, member=member, include_all=show_all)
    if json_out:
        print_json([v.as_dict() for v in views])
        return
    if not views:
        c.console.print("no requests wait for free GPUs" + ("" if show_all else " (--all shows past ones)"))
        return
    table = Table()
    for col in ("id", "member", "host", "GPUs", "status", "asked", "until", "told of"):
        table.add_column(col, justify="right" if col == "id" else "left")
    for v in views:
        table.add_row(
            str(v.id), Text(v.member), Text(v.host), str(v.count), v.status, show_time(v.created),
            show_time(v.expires), v.free_gpus or "",
        )  # fmt: skip
    c.console.print(table)


@app.command("notify-free-cancel")
def notify_free_cancel(
    ctx: typer.Context,
    request_id: Annotated[int, typer.Argument(metavar="ID", help="The request.")],
    json_out: JsonOpt = False,
) -> None:
    """Cancel a request to be told when GPUs are free."""
    from labgpu.services import gpus as gpus_svc

    c = get_context(ctx)
    view = gpus_svc.cancel_free_request(c.services, request_id)
    if json_out:
        print_json(view.as_dict())
        return
    c.console.print(f"request {view.id} cancelled")
