"""`labgpu backup`: back up the store, containers and homes; list; restore onto a fresh host."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.member import JsonOpt

app = typer.Typer(
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


@app.command("create")
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


@app.command("list")
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


@app.command("restore")
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
    from labgpu.cli.reconcile import _print_report
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
