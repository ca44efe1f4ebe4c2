"""`labgpu doctor`."""

from __future__ import annotations

import typer


def doctor(ctx: typer.Context) -> None:
    """Check every prerequisite and say how to fix what fails."""
    raise typer.Exit(1)
