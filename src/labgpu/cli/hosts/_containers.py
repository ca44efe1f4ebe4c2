"""`labgpu container list`: the instances on every host, labgpu's and others'."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt
from labgpu.domain.members import format_size

container_app = typer.Typer(help="Containers on every host.", no_args_is_help=True)


@container_app.command("list")
def container_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every instance on every host (one request per host, in parallel), with its member and ports."""
    from labgpu.services.hosts import list_containers

    c = get_context(ctx)
    rows = list_containers(c.services)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    table = Table("host", "container", "status", "member", "ssh", "memory", "kind")
    for r in rows:
        if r.kind == "unreachable" and r.name == "-":
            table.add_row(
                escape(r.host), "-", f"[bold red]unreachable[/]: {escape(r.error or '')}", "", "", "", ""
            )
            continue
        ssh = f"{r.address}:{r.ports['ssh']}" if r.address and "ssh" in r.ports else "-"
        style = {"Running": "green", "missing": "bold red", "unreachable": "red"}.get(r.status, "")
        status = f"[{style}]{escape(r.status)}[/]" if style else escape(r.status)
        table.add_row(
            escape(r.host),
            escape(r.name),
            status,
            escape(r.member or "-"),
            escape(ssh),
            format_size(r.memory_usage) if r.memory_usage else "-",
            r.kind,
        )
    c.console.print(table if rows else "no hosts answered and none are known")
