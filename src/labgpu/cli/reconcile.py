"""`labgpu reconcile`: repair the drift between the store and the daemon."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import CliContext, get_context, print_json


def reconcile(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Change nothing; say what would be repaired.")
    ] = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing; check that every member has exactly one container, no port is "
            "used twice, every home folder exists, nothing is left to repair and booked GPUs match "
            "the bookings. Exit code 1 when one of these does not hold.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Compare the store with the daemon and repair the drift.

    Finishes members left in provisioning, recreates missing containers (the
    home is kept), puts back labgpu's devices and config keys, and starts
    containers that should run. Never changes or deletes an instance labgpu
    does not own. Exit code 1 when a repair failed.
    """
    from labgpu.services.ops import reconcile as run_reconcile

    c = get_context(ctx)
    if check:
        _check(c, as_json=as_json)
        return
    report = run_reconcile(c.services, dry_run=dry_run)
    if as_json:
        print_json(report.as_dict())
    else:
        _print_report(c.console, report)
    if report.failures:
        raise typer.Exit(1)


def _check(c: CliContext, *, as_json: bool) -> None:
    from labgpu.services.ops import check_invariants

    report = check_invariants(c.services)
    if as_json:
        print_json(report.as_dict())
    elif report.ok:
        c.console.print(f"every invariant holds ({report.checks} checks)")
    else:
        table = Table("invariant", "subject", "what is wrong", title="does not hold", title_justify="left")
        for v in report.violations:
            table.add_row(v.invariant, escape(v.subject), escape(v.detail))
        c.console.print(table)
        c.console.print("run `labgpu reconcile` to repair what it can, then check again")
    if not report.ok:
        raise typer.Exit(1)


def _print_report(console: object, report: object) -> None:
    from rich.console import Console

    from labgpu.services.ops import ReconcileReport

    assert isinstance(console, Console) and isinstance(report, ReconcileReport)
    repairs = report.repairs
    others = [a for a in report.actions if not a.changes]
    if repairs:
        title = "would repair (dry run: nothing changed)" if report.dry_run else "repairs"
        table = Table("member", "action", "detail", "result", title=title, title_justify="left")
        for a in repairs:
            if a.error:
                result = f"[red]failed: {escape(a.error)}[/]"
            elif a.done:
                result = "[green]done[/]"
            else:
                result = "planned"
            table.add_row(a.member, a.action, escape(a.detail), result)
        console.print(table)
    if others:
        table = Table("name", "kind", "detail", title="left alone", title_justify="left")
        for a in others:
            detail = escape(a.detail) + (f" [red]({escape(a.error)})[/]" if a.error else "")
            table.add_row(a.member, a.action, detail)
        console.print(table)
    if not repairs:
        console.print(
            f"nothing to repair: {report.members} member(s) match the daemon "
            f"({report.instances} instance(s) listed)"
        )
