"""Web apps in members' containers: which a container has and whether they run; stopping one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt

app = typer.Typer(
    help="Web apps (JupyterLab, VS Code, TensorBoard) in members' containers.", no_args_is_help=True
)

NameArg = Annotated[str, typer.Argument(help="The member.")]


@app.command("list")
def list_apps(ctx: typer.Context, name: NameArg, as_json: JsonOpt = False) -> None:
    """The apps of a member's container (from its template) and their states."""
    from labgpu.services import apps

    c = get_context(ctx)
    svc = c.services
    view = apps.member_apps(svc, name)
    states = apps.app_states(svc, name)
    rows = [
        {
            "name": a.name,
            "title": a.title,
            "port": a.port,
            "base_path": a.base_path,
            "state": states.get(a.name),
        }
        for a in view.apps
    ]
    if as_json:
        print_json({"member": name, "container": view.container, "status": view.status, "apps": rows})
        return
    table = Table("app", "title", "port", "base path", "state")
    for row in rows:
        table.add_row(*(str(row[k]) for k in ("name", "title", "port", "base_path", "state")))
    c.console.print(table)


@app.command("stop")
def stop(
    ctx: typer.Context, name: NameArg, app_name: Annotated[str, typer.Argument(help="The app.")]
) -> None:
    """Stop an app in a member's container (it starts again when opened in the portal)."""
    from labgpu.services import apps

    c = get_context(ctx)
    apps.stop_app(c.services, name, app_name)
    c.console.print(f"stopped {app_name} of {name}")
