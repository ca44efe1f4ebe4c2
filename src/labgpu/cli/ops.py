"""The operations feature on the command line: keeping an installation running and its data safe.

`labgpu reconcile` (repair the drift between the store and the daemon), `labgpu boot` (what a host runs at
every start), `labgpu jobs ...` (the periodic jobs: booking starts and ends, idle checks, reconcile),
`labgpu backup ...` (the store, containers and homes; restore onto a fresh host), `labgpu db ...` (the
store's schema) and `labgpu config ...` (the effective settings). Mounted in :mod:`labgpu.cli.main`.

`labgpu serve` runs the jobs in a thread (setting ``jobs_in_serve``); without it, cron runs
`labgpu jobs run-once` every minute. Both may run at once: a lease in the store keeps one job to one
runner at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from labgpu.cli.context import CliContext, get_context, print_json
from labgpu.cli.options import JsonOpt, NowOpt, ReplayOpt, clock, show_time
from labgpu.cli.settings_reference import iter_settings_help, settings_reference_markdown

# Reconcile and boot -------------------------------------------------------------------------------


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


def boot(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the LXD/Incus daemon to answer.")
    ] = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Run at every host start (labgpu-boot.service): make the NVIDIA device nodes (/dev/nvidia-uvm ...),
    wait for the daemon, start the containers that should run and put back their port maps, refresh the
    login gateway. Exit code 1 when something could not be repaired."""
    from labgpu.services.ops import boot as run_boot
    from labgpu.services.ops import ensure_gpu_devices

    c = get_context(ctx)
    err = c.console
    devices = ensure_gpu_devices()
    if not as_json:
        if devices.gpus:
            err.print(
                f"GPU device nodes: {devices.gpus} GPU(s); present: {', '.join(devices.present) or 'none'}"
            )
            for action in devices.actions:
                err.print(f"  ran: {escape(action)}", highlight=False)
            for problem in devices.problems:
                err.print(f"  [red]problem:[/] {escape(problem)}", highlight=False)
        else:
            err.print("GPU device nodes: no NVIDIA GPU on this host, nothing to do")
        err.print(f"waiting up to {timeout:g}s for the daemon ...")
    report = run_boot(c.services, timeout=timeout, devices=lambda: devices)
    if as_json:
        print_json(report.as_dict())
    else:
        err.print(f"daemon answered after {report.waited_seconds:.1f}s")
        if report.reconcile is not None:
            _print_report(err, report.reconcile)
        if report.gateway is not None:
            changed = [s for s in report.gateway.steps if s.status != "unchanged"]
            err.print(f"login gateway: {len(changed)} change(s)")
        for problem in report.problems:
            err.print(f"[red]problem:[/] {escape(problem)}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


# Periodic jobs ------------------------------------------------------------------------------------


jobs_app = typer.Typer(
    help="Periodic jobs: booking starts and ends, idle GPU checks, reconcile.", no_args_is_help=True
)


@jobs_app.command("run-once")
def run_once(
    ctx: typer.Context,
    job: Annotated[
        str | None,
        typer.Option("--job", help="Run this job now, due or not (bookings, gpu-idle, reconcile, prune)."),
    ] = None,
    json_out: JsonOpt = False,
    now: NowOpt = None,
    replay: ReplayOpt = None,
) -> None:
    """Run the jobs that are due (for cron: `* * * * * root labgpu jobs run-once`). Exit 1 when one failed."""
    from labgpu.services import ops

    c = get_context(ctx)
    source = None
    if replay is not None:
        from labgpu.gpu.fake import RecordedNvml

        path: Path = replay
        source = lambda: RecordedNvml.from_file(path)  # noqa: E731
    runs = ops.run_once(c.services, job=job, now=clock(now) if now else None, gpu_source=source)
    if json_out:
        print_json([r.as_dict() for r in runs])
    else:
        for r in runs:
            if r.status in (ops.NOT_DUE,) and job is None:
                continue
            style = {ops.OK: "green", ops.FAILED: "red"}.get(r.status, "yellow")
            c.console.print(Text(f"{r.job}: {r.status}", style=style), soft_wrap=True)
            for line in r.result.lines:
                c.console.print(Text(f"  {line}"), soft_wrap=True)
            for line in r.result.errors:
                c.console.print(Text(f"  error: {line}", style="red"), soft_wrap=True)
        if all(r.status == ops.NOT_DUE for r in runs):
            c.console.print("no job is due", soft_wrap=True)
    if any(r.status == ops.FAILED for r in runs):
        raise typer.Exit(1)


@jobs_app.command("status")
def status(ctx: typer.Context, json_out: JsonOpt = False) -> None:
    """Every job: last run, its outcome, next due time, and who holds its lease."""
    from labgpu.services import ops

    c = get_context(ctx)
    rows = ops.job_status(c.services)
    if json_out:
        print_json([r.as_dict() for r in rows])
        return
    table = Table()
    for col in ("job", "every", "last run", "status", "next run", "lease", "last error"):
        table.add_column(col)
    for r in rows:
        every = (
            f"{r.every_seconds / 60:g} min" if r.every_seconds < 86400 else f"{r.every_seconds / 86400:g} d"
        )
        lease = (
            f"{r.lease_owner} until {show_time(r.lease_until)}" if r.lease_owner and r.lease_until else "-"
        )
        table.add_row(
            r.name,
            every,
            show_time(r.last_started_at) if r.last_started_at else "never",
            Text(r.last_status or "-", style="red" if r.last_status == "failed" else ""),
            show_time(r.next_run_at) if r.next_run_at else "now",
            Text(lease),
            Text((r.last_error or "")[:200]),
        )
    c.console.print(table)


# Backups ------------------------------------------------------------------------------------------


backup_app = typer.Typer(
    help="Backups: the store, containers and homes; restore onto a fresh host.", no_args_is_help=True
)

DestOpt = Annotated[
    Path | None, typer.Option("--dest", help="Folder of the backups. Default: the backup_dir setting.")
]


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


@backup_app.command("create")
def create(
    ctx: typer.Context,
    containers: Annotated[
        str, typer.Option("--containers", help="Whose containers: all, none, or NAME,NAME.")
    ] = "all",
    homes: Annotated[
        bool, typer.Option("--homes", help="Also tar the members' home folders (their data; can be large).")
    ] = False,
    dest: DestOpt = None,
    keep: Annotated[
        int | None,
        typer.Option("--keep", help="Keep this many backups in the folder (default: backup_keep; 0: all)."),
    ] = None,
    compression: Annotated[
        str, typer.Option("--compression", help="Of container backups: gzip, zstd, xz, bzip2 or none.")
    ] = "gzip",
    as_json: JsonOpt = False,
) -> None:
    """Back up the store and containers (and homes with --homes) into one new folder; then delete the
    oldest backups beyond --keep."""
    from labgpu.services.ops import create_backup

    c = get_context(ctx)

    def progress(step: str) -> None:
        if not as_json:
            c.console.print(f"  backing up {escape(step)} ...", highlight=False)

    result = create_backup(
        c.services,
        containers=containers,
        homes=homes,
        dest=dest,
        keep=keep,
        compression=compression,
        progress=progress,
    )
    if as_json:
        print_json(result.as_dict())
        return
    info = result.info
    c.console.print(
        f"backup [bold]{info.path}[/] ({_size(info.size)}): store, {len(info.containers)} container(s), "
        f"{len(info.homes)} home(s)"
    )
    for note in result.notes:
        c.console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    for name in result.removed:
        c.console.print(
            f"removed old backup {escape(name)} (keeping {keep if keep is not None else c.settings.backup_keep})"
        )


@backup_app.command("list")
def list_(ctx: typer.Context, dest: DestOpt = None, as_json: JsonOpt = False) -> None:
    """The backups in the folder, newest first."""
    from labgpu.services.ops import list_backups

    c = get_context(ctx)
    folder = dest or c.settings.backup_dir
    backups = list_backups(folder)
    if as_json:
        print_json([b.as_dict() for b in backups])
        return
    if not backups:
        c.console.print(f"no backups in {folder}: make one with `labgpu backup create`")
        return
    table = Table("backup", "size", "store", "members", "containers", "homes")
    for b in backups:
        table.add_row(
            b.name,
            _size(b.size),
            b.store,
            str(len(b.members)),
            ", ".join(b.containers) or "-",
            ", ".join(b.homes) or "-",
        )
    c.console.print(table)


@backup_app.command("restore")
def restore(
    ctx: typer.Context,
    backup: Annotated[str, typer.Argument(help="A backup folder, or its name in the backup folder.")],
    containers: Annotated[
        str,
        typer.Option(
            "--containers",
            help="Import these containers (all, none, NAME,NAME); others are made "
            "again from their templates.",
        ),
    ] = "all",
    homes: Annotated[
        bool, typer.Option("--homes/--no-homes", help="Restore the homes in the backup.")
    ] = True,
    as_json: JsonOpt = False,
) -> None:
    """Restore a backup onto a fresh host (an empty store; run `labgpu host init` first): the store, the
    homes, the containers, then reconcile (start them, put port maps back). Exit code 1 when a repair failed."""
    from labgpu.services.ops import restore_backup

    c = get_context(ctx)

    def progress(step: str) -> None:
        if not as_json:
            c.console.print(f"  restoring {escape(step)} ...", highlight=False)

    result = restore_backup(c.services, backup, containers=containers, homes=homes, progress=progress)
    if as_json:
        print_json(result.as_dict())
    else:
        for step in result.steps:
            c.console.print(f"  [green]done[/] {escape(step)}", highlight=False)
        for note in result.notes:
            c.console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
        if result.reconcile is not None:
            _print_report(c.console, result.reconcile)
    if result.failed:
        raise typer.Exit(1)


# The store's schema -------------------------------------------------------------------------------


db_app = typer.Typer(help="Database schema: upgrade it, show its revision.", no_args_is_help=True)


@db_app.command("upgrade")
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


@db_app.command("current")
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


# Settings -----------------------------------------------------------------------------------------


config_app = typer.Typer(help="Show settings.", no_args_is_help=True)


@config_app.command("show")
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


@config_app.command("reference")
def reference() -> None:
    """Print the settings reference as Markdown (the table in docs/configuration.md)."""
    typer.echo(settings_reference_markdown(), nl=False)
