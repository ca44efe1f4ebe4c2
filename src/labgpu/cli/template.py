"""`labgpu template`."""

from __future__ import annotations

import typer

app = typer.Typer(help="template commands.", no_args_is_help=True)
