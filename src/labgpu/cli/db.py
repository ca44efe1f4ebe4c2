"""`labgpu db`: bring the store's schema up to date and show where it stands."""

from __future__ import annotations

from typing import Annotated

import typer

from labgpu.cli.context import get_context, print_json

app = typer.Typer(help="Database schema: upgrade it, show its revision.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Create or upgrade the database schema to this labgpu's version. Safe to run again."""
    from labgpu.store.db import database_url, describe_url
    from labgpu.store.migrate import upgrade as run_upgrade

    c = get_context(ctx)
    where = describe_url(database_url(c.settings))
    result = run_upgrade(c.settings)
    if result.changed:
        c.console.print(
            f"database {where}: upgraded from {result.before or 'empty'} to {result.after}",
            soft_wrap=True,
            highlight=False,
        )
    else:
        c.console.print(
            f"database {where}: already at {result.after} (head), nothing to do",
            soft_wrap=True,
            highlight=False,
        )


@app.command("current")
def current(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the database's schema revision and whether it is up to date."""
    from labgpu.store.db import database_url, describe_url
    from labgpu.store.migrate import current_revision, head_revision

    c = get_context(ctx)
    where = describe_url(database_url(c.settings))
    rev = current_revision(c.settings)
    head = head_revision()
    if as_json:
        print_json({"database": where, "current": rev, "head": head, "up_to_date": rev == head})
        return
    if rev == head:
        state = f"{rev} (head)"
    elif rev is None:
        state = f"none (empty database; head is {head}): run `labgpu db upgrade`"
    else:
        state = f"{rev} (head is {head}): run `labgpu db upgrade`"
    c.console.print(f"database {where}: {state}", soft_wrap=True, highlight=False)
