"""`labgpu boot` and `labgpu host install-services`: what a host runs at every start, and the units that run it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from labgpu.cli.context import get_context, print_json
from labgpu.cli.member import JsonOpt


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
    from labgpu.cli.reconcile import _print_report
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


def install_services(
    ctx: typer.Context,
    unit_dir: Annotated[Path, typer.Option("--unit-dir", help="Where to write the units.")] = Path(
        "/etc/systemd/system"
    ),
    enable: Annotated[
        bool, typer.Option("--enable/--no-enable", help="Enable the units when systemd runs.")
    ] = True,
    start: Annotated[bool, typer.Option("--now", help="Also start them now.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write systemd units for `labgpu boot` (oneshot, after the daemon), `labgpu serve` and `labgpu agent`;
    reload systemd and enable them when systemd runs."""
    from labgpu.services.hosts import install_units

    c = get_context(ctx)
    report = install_units(unit_dir=unit_dir, config=c.config_path, enable=enable, start=start)
    if as_json:
        print_json(report.as_dict())
        return
    for name in report.written:
        c.console.print(f"  [green]written[/]   {unit_dir / name}")
    for name in report.unchanged:
        c.console.print(f"  [dim]unchanged[/] {unit_dir / name}")
    if report.enabled:
        c.console.print(f"enabled: {', '.join(report.enabled)}")
    for note in report.notes:
        c.console.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
