"""`labgpu host`: set a host up for labgpu."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from labgpu.cli.context import get_context, print_json
from labgpu.errors import LabgpuError, Unavailable

app = typer.Typer(
    help="Hosts: set one up, add others (standalone or a cluster), list, drain, remove.", no_args_is_help=True
)

STATUS_STYLE = {
    "created": "green",
    "changed": "yellow",
    "unchanged": "dim",
    "would-create": "cyan",
    "would-change": "cyan",
    "needs-attention": "bold red",
}


def fail_unavailable(exc: LabgpuError) -> NoReturn:
    """Print a daemon/database that cannot be reached as ONE line (where we looked, how to start it)
    and exit 1."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    line = exc.message.rstrip(".")
    if exc.hint:
        line += f"; {exc.hint}"
    err.print(f"[bold red]error:[/] {escape(line)}")
    raise typer.Exit(1)


@app.command("init")
def init(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Update a labgpu profile that differs from the settings.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be done; change nothing.")
    ] = False,
    nat: Annotated[
        bool,
        typer.Option(
            "--nat/--no-nat", help="IPv4 NAT on a new bridge (containers reach the internet through it)."
        ),
    ] = True,
    pool_size: Annotated[
        str, typer.Option("--pool-size", help="Size of a new btrfs/zfs pool's sparse loop file.")
    ] = "20GiB",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    subuid_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    subgid_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    sysctl_root: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Create the storage pool, network, profile and subuid/subgid ranges labgpu needs, and raise the
    kernel's inotify and map-count limits as LXD's production guide says.

    Only what is missing is created; running it again changes nothing.

    What exists is never changed without --force. Exit code 1 when a step needs attention.
    """
    from labgpu.services.hosts import HostPaths, StepStatus, init_host

    cli = get_context(ctx)
    settings = cli.settings
    paths = HostPaths(subuid_file=subuid_file, subgid_file=subgid_file, sysctl_root=sysctl_root)
    try:
        report = init_host(
            cli.runtime, settings, force=force, dry_run=dry_run, nat=nat, pool_size=pool_size, paths=paths
        )
    except Unavailable as exc:
        fail_unavailable(exc)
    if as_json:
        print_json(report.to_dict())
    else:
        out = cli.console
        title = "Dry run on" if dry_run else "Host init on"
        out.print(f"{title} {escape(report.runtime)}", highlight=False)
        width = max(len(s.step) for s in report.steps)
        for step in report.steps:
            style = STATUS_STYLE.get(str(step.status), "")
            target = "" if step.target == "-" else f" {step.target}"
            out.print(
                f"  [{style}]{step.status!s:<15}[/] {escape(step.step):<{width}}{escape(target)}: "
                f"{escape(step.detail)}",
                highlight=False,
                soft_wrap=True,
            )
            for line in step.diff:
                out.print(f"      {escape(line)}", highlight=False, soft_wrap=True)
        for note in report.notes:
            out.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        if report.nothing_to_change:
            out.print("nothing to change")
        elif dry_run:
            out.print("dry run: nothing was changed")
    if any(s.status == StepStatus.NEEDS_ATTENTION for s in report.steps):
        raise typer.Exit(1)
