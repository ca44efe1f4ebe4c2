"""`labgpu notify ...`: test the lab's notification channels, see the delivery queue, and a member's own
channels (members add theirs on the portal's Notifications page)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt, show_time

app = typer.Typer(
    help="Notifications: channels are Apprise URLs (notify_urls for the lab; members add their own).",
    no_args_is_help=True,
)


@app.command("test")
def test(
    ctx: typer.Context,
    to: Annotated[
        list[str] | None,
        typer.Option("--to", help="Mail the test to this address instead of the admins' (repeatable)."),
    ] = None,
    member: Annotated[
        str | None, typer.Option("--member", help="Test this member's channels instead of the lab's.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Send a test message to every configured channel now (each of notify_urls, and mail to the admins
    when SMTP is set up), and say which failed and why. Exit 1 when one failed."""
    from labgpu.services import notify

    c = get_context(ctx)
    if member is not None:
        checks = notify.check_member_channels(c.services, member)
    else:
        checks = notify.check_lab_channels(c.services, to=list(to) if to else None)
    if json_out:
        print_json([x.as_dict() for x in checks])
    else:
        if not checks:
            c.console.print("no channel configured: set notify_urls or smtp_host")
        for x in checks:
            style = {"sent": "green", "failed": "red"}.get(x.status, "yellow")
            line = Text(f"{x.status:7} ", style=style) + Text(x.channel)
            if x.error:
                line += Text(f": {x.error}")
            c.console.print(line, soft_wrap=True)
    if any(not x.ok for x in checks):
        raise typer.Exit(1)


@app.command("queue")
def queue(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only deliveries with this status: pending, sent or failed."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many, newest first.")] = 50,
    json_out: JsonOpt = False,
) -> None:
    """The newest notifications and how their delivery went: sent, pending (with the next attempt and
    the last error), or failed (given up after notify_max_attempts)."""
    from labgpu.errors import BadInput
    from labgpu.services import notify

    if status is not None and status not in ("pending", "sent", "failed"):
        raise BadInput("--status is one of pending, sent, failed")
    c = get_context(ctx)
    rows = notify.list_deliveries(c.services, status=status, limit=limit)
    if json_out:
        print_json([r.as_dict() for r in rows])
        return
    table = Table()
    for col in ("id", "queued", "kind", "for", "channel", "status", "tries", "next / sent", "last error"):
        table.add_column(col)
    for r in rows:
        when = (
            show_time(r.sent_at)
            if r.sent_at
            else (show_time(r.next_attempt_at) if r.status == "pending" else "-")
        )
        table.add_row(
            str(r.id),
            show_time(r.created_at),
            r.kind,
            Text(r.recipient),
            Text(r.target),
            Text(r.status, style={"sent": "green", "failed": "red"}.get(r.status, "yellow")),
            str(r.attempts),
            when,
            Text((r.last_error or "")[:160]),
        )
    c.console.print(table)


@app.command("channels")
def channels(
    ctx: typer.Context,
    member: Annotated[str, typer.Argument(help="The member whose own channels to list.")],
    json_out: JsonOpt = False,
) -> None:
    """A member's own channels (masked) and the kinds of event each gets."""
    from labgpu.services import notify

    c = get_context(ctx)
    rows = notify.list_channels(c.services, member)
    if json_out:
        print_json([r.as_dict() for r in rows])
        return
    table = Table()
    for col in ("id", "name", "channel", "kinds", "added"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r.id), Text(r.label), Text(r.shown), ", ".join(r.kinds), show_time(r.created_at))
    c.console.print(table)
