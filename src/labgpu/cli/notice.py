"""`labgpu notice`: messages to every member (login gateway status and portal)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.member import JsonOpt

app = typer.Typer(help="Notices shown to members at login and on the portal.", no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="The text members see (up to 1000 characters).")],
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="When it stops being shown: 2h, 3d, 1w or 2025-06-01 18:00 (local time)."
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="When it starts being shown (default: now); same forms.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a notice; it shows in the gateway's login status and on the portal."""
    from labgpu.services.portal import add_notice, parse_when

    c = get_context(ctx)
    starts_at = parse_when(start) if start else None
    ends_at = parse_when(until, now=starts_at) if until else None
    info = add_notice(c.services, message, starts_at=starts_at, ends_at=ends_at)
    if as_json:
        print_json(info.as_dict())
        return
    shown = f"until {info.ends_at.astimezone():%Y-%m-%d %H:%M}" if info.ends_at else "until removed"
    c.console.print(f"notice {info.id} added ({shown})")


@app.command("list")
def list_(
    ctx: typer.Context,
    include_past: Annotated[bool, typer.Option("--all", help="Also notices that have ended.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Notices in force or still to come."""
    from labgpu.services.portal import list_notices
    from labgpu.store.models import utcnow

    c = get_context(ctx)
    notices = list_notices(c.services, include_past=include_past)
    if as_json:
        print_json([n.as_dict() for n in notices])
        return
    if not notices:
        c.console.print("no notices: add one with `labgpu notice add MESSAGE --until 2h`")
        return
    now = utcnow()
    table = Table("id", "shown", "from", "until", "by", "message")
    for n in notices:
        state = "now" if n.active(now) else ("ended" if n.ends_at and n.ends_at <= now else "later")
        table.add_row(
            str(n.id),
            state,
            f"{n.starts_at.astimezone():%Y-%m-%d %H:%M}",
            f"{n.ends_at.astimezone():%Y-%m-%d %H:%M}" if n.ends_at else "removed",
            escape(n.created_by),
            escape(n.message),
        )
    c.console.print(table)


@app.command("rm")
def rm(
    ctx: typer.Context,
    notice_id: Annotated[int, typer.Argument(metavar="ID", help="The notice's id (notice list).")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a notice now."""
    from labgpu.services.portal import remove_notice

    c = get_context(ctx)
    info = remove_notice(c.services, notice_id)
    if as_json:
        print_json(info.as_dict())
        return
    c.console.print(f"notice {info.id} removed")
