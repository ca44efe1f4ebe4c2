"""`labgpu doctor`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from labgpu.cli.context import get_context, print_json
from labgpu.cli.hosts._host import fail_unavailable

STATUS_TEXT = {
    "ok": "[green]ok[/]",
    "warn": "[yellow]warn[/]",
    "fail": "[bold red]FAIL[/]",
    "n-a": "[dim]n/a[/]",
}


def doctor(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as a JSON list.")] = False,
) -> None:
    """Check every prerequisite and say how to fix what fails.

    Exit code 0 only when no critical check fails.
    """
    from labgpu.errors import Unavailable
    from labgpu.services.hosts import CheckStatus, run_doctor

    cli = get_context(ctx)
    settings = cli.settings
    report = run_doctor(settings, connect=lambda: cli.runtime)
    if as_json:
        print_json(report.to_list())
        raise typer.Exit(report.exit_code)
    if isinstance(report.runtime_error, Unavailable):
        # Nothing else matters much until the daemon runs: say that, and only that.
        fail_unavailable(report.runtime_error)

    out = cli.console
    if report.runtime:
        out.print(f"Checked {escape(report.runtime)}", highlight=False)
    width = max(len(c.name) for c in report.checks)
    for check in report.checks:
        status = STATUS_TEXT[str(check.status)]
        if check.status == CheckStatus.FAIL and not check.critical:
            status = "[yellow]fail[/]"
        pad = " " * (4 - len(str(check.status).replace("n-a", "n/a")))
        out.print(
            f"  {status}{pad}  {check.name:<{width}}  {escape(check.detail)}",
            highlight=False,
            soft_wrap=True,
            emoji=False,  # details hold fingerprints (":AB:") and paths, never emoji codes
        )
        if check.fix:
            out.print(
                f"  {'':4}  {'':<{width}}  [dim]fix:[/] {escape(check.fix)}", highlight=False, soft_wrap=True
            )
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in CheckStatus}
    summary = (
        f"{counts[CheckStatus.OK]} ok, {counts[CheckStatus.WARN]} warnings, "
        f"{counts[CheckStatus.FAIL]} failed, {counts[CheckStatus.NA]} not applicable"
    )
    if report.failed_critical:
        names = ", ".join(c.name for c in report.failed_critical)
        out.print(f"[bold red]{summary}[/]; critical: {escape(names)}", highlight=False)
    else:
        out.print(f"[green]{summary}[/]: labgpu can run here", highlight=False)
    raise typer.Exit(report.exit_code)
