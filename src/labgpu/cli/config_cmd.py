"""`labgpu config`: show the effective settings and what each one means."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.settings import iter_settings_help, settings_reference_markdown

app = typer.Typer(help="Show settings.", no_args_is_help=True)


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show every setting with its effective value and help (secrets hidden)."""
    c = get_context(ctx)
    values = c.settings.model_dump(mode="json")
    rows = []
    for name, default, help_text in iter_settings_help():
        value = values.get(name)
        if name == "secret_key" and value is not None:
            value = "**********"
        rows.append({"name": name, "value": value, "default": default, "help": help_text})
    if as_json:
        print_json(rows)
        return
    table = Table("setting", "value", "help", show_lines=False)
    for r in rows:
        table.add_row(r["name"], "" if r["value"] is None else str(r["value"]), r["help"])
    c.console.print(table)


@app.command("reference")
def reference() -> None:
    """Print the settings reference as Markdown (the table in docs/configuration.md)."""
    typer.echo(settings_reference_markdown(), nl=False)
