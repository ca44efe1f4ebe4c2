"""`labgpu share`: host folders mounted into members' containers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt, YesOpt, confirm

share_app = typer.Typer(
    help="Shares: host folders (datasets, toolkits) mounted into containers.", no_args_is_help=True
)


@share_app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Share name, e.g. cuda-12.4 (the device is share-NAME).")],
    source: Annotated[str, typer.Argument(help="Existing absolute folder on the host.")],
    path: Annotated[str, typer.Argument(help="Absolute mount path inside containers.")],
    rw: Annotated[bool, typer.Option("--rw", help="Mount read-write (default: read-only).")] = False,
    all_members: Annotated[
        bool, typer.Option("--all", help="Mount it for every member, through the labgpu profile.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a share. With --all every container gets it now; otherwise attach it to members with
    `labgpu member set NAME --share SHARE` (or `member add --share`)."""
    from labgpu.services.members import add_share

    c = get_context(ctx)
    info = add_share(
        c.services, name=name, source=source, path=path, readonly=not rw, all_members=all_members
    )
    if as_json:
        print_json(info.as_dict())
        return
    mode = "read-write" if rw else "read-only"
    c.console.print(f"share [bold]{info.name}[/]: {info.source} -> {info.path} ({mode})")
    if all_members:
        c.console.print(f"mounted in every container using the {c.services.settings.profile_name} profile")
    else:
        c.console.print(f"attach it with `labgpu member set MEMBER --share {info.name}`")


@share_app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Shares, where they are mounted and for whom."""
    from labgpu.services.members import list_shares

    c = get_context(ctx)
    shares = list_shares(c.services)
    if as_json:
        print_json([s.as_dict() for s in shares])
        return
    if not shares:
        c.console.print("no shares yet: add one with `labgpu share add NAME SOURCE PATH`")
        return
    table = Table("share", "host folder", "mounted at", "mode", "members")
    for s in shares:
        table.add_row(
            s.name,
            s.source,
            s.path,
            "ro" if s.readonly else "rw",
            "all (profile)" if s.all_members else (", ".join(s.members) or "-"),
        )
    c.console.print(table)


@share_app.command("rm")
def rm(ctx: typer.Context, name: str, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Detach a share from every container and forget it; the host folder is never touched."""
    from labgpu.services.members import get_share, remove_share

    c = get_context(ctx)
    info = get_share(c.services, name)
    whom = "every member" if info.all_members else (", ".join(info.members) or "no member")
    confirm(f"Detach share {name} ({info.path}) from {whom}? {info.source} on the host is kept.", yes=yes)
    removed = remove_share(c.services, name)
    if as_json:
        print_json(removed.as_dict())
        return
    c.console.print(f"share {name} removed; {removed.source} on the host is untouched")
    for note in removed.notes:
        c.console.print(f"[dim]note: {note}[/]")
