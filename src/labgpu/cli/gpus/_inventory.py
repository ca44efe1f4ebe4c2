"""`labgpu gpu` (list, top, record) and `labgpu agent`: who uses which GPU. The `gpu` app's modes and
bookings commands are in :mod:`._bookings`.

A host without an NVIDIA GPU or driver is not an error for the read commands: they print one line
saying so ("no NVIDIA GPU on this host (...)") and exit 0, so scripts and cron jobs that run them on
every host do not fail on CPU-only ones. `gpu list --json` then prints ``[]`` on stdout and the
reason on stderr.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from labgpu.cli.context import CliContext, get_context, print_json
from labgpu.cli.options import JsonOpt, ReplayOpt
from labgpu.gpu.inventory import GpuUsage, Inventory
from labgpu.gpu.nvml import GpuSource

app = typer.Typer(help="GPUs: inventory, who uses which GPU, modes and bookings.", no_args_is_help=True)

# Hidden: read another /proc (--replay, from cli.options: a recording made by `labgpu gpu record`).
ProcOpt = Annotated[Path, typer.Option("--proc-root", hidden=True)]


def _source(replay: Path | None) -> GpuSource:
    if replay is not None:
        from labgpu.gpu.fake import RecordedNvml

        return RecordedNvml.from_file(replay)
    from labgpu.gpu.nvml import NvmlSource

    return NvmlSource()


def make_sweep(c: CliContext, source: GpuSource, proc_root: Path = Path("/proc")) -> Callable[[], Inventory]:
    """One inventory per call: NVML through ``source``, members from the runtime (cached)."""
    from labgpu.services.gpus import make_sweep as sweep_of_this_machine

    return sweep_of_this_machine(
        lambda: c.runtime, source, project=c.settings.runtime_project, proc_root=proc_root
    )


def _size(value: int | None) -> str:
    """GPU memory as people read it off nvidia-smi: "41.0 GiB", "420 MiB"."""
    if value is None:
        return "-"
    if value >= 2**30:
        return f"{value / 2**30:.1f} GiB"
    return f"{value / 2**20:.0f} MiB"


def _pct(value: int | None) -> str:
    return "-" if value is None else f"{value}%"


def _memory(g: GpuUsage) -> str:
    return f"{_size(g.gpu.memory_used)} / {_size(g.gpu.memory_total)}"


def _warn(console: Console, inv: Inventory) -> None:
    for warning in inv.warnings:
        console.print(Text(f"warning: {warning}", style="yellow"), soft_wrap=True)


@app.command("list")
def list_gpus(
    ctx: typer.Context,
    json_out: JsonOpt = False,
    replay: ReplayOpt = None,
    proc_root: ProcOpt = Path("/proc"),
) -> None:
    """GPUs of this host with their processes, each attributed to a container and member."""
    c = get_context(ctx)
    inv = make_sweep(c, _source(replay), proc_root)()
    err = Console(stderr=True, highlight=False)
    if json_out:
        if not inv.available:
            err.print(Text(inv.headline), soft_wrap=True)
        _warn(err, inv)
        print_json([g.to_json() for g in inv.gpus])
        return
    if not inv.available:
        c.console.print(Text(inv.headline), soft_wrap=True)
        _warn(err, inv)
        return
    gpus = Table(title=f"GPUs (driver {inv.driver_version}, CUDA {inv.cuda_version or '?'})")
    for col in ("#", "name", "pci", "uuid", "memory", "util", "temp", "power", "procs"):
        gpus.add_column(col, justify="right" if col in ("#", "util", "temp", "procs") else "left")
    for g in inv.gpus:
        s = g.gpu
        if s.error:
            gpus.add_row(str(s.index), Text(s.name or "?"), s.pci_address, s.uuid, Text(s.error, style="red"))
            continue
        temp = "-" if s.temperature is None else f"{s.temperature}°C"
        power = "-" if s.power_watts is None else f"{s.power_watts:.0f} W"
        util = _pct(s.utilization) if not s.mig_enabled else "MIG"
        gpus.add_row(
            str(s.index),
            Text(s.name),
            s.pci_address,
            s.uuid,
            _memory(g),
            util,
            temp,
            power,
            str(len(g.processes)),
        )
    c.console.print(gpus)
    procs = Table(title="processes")
    for col in ("gpu", "pid", "member", "container", "command", "memory"):
        procs.add_column(col, justify="right" if col in ("gpu", "pid", "memory") else "left")
    for g in inv.gpus:
        for p in g.processes:
            procs.add_row(
                str(g.gpu.index),
                str(p.pid),
                Text(p.member or "-"),
                Text(p.owner.label, style="dim" if not p.owner.in_container else ""),
                Text(p.command or "?"),
                _size(p.used_memory),
            )
    if procs.row_count:
        c.console.print(procs)
    else:
        c.console.print("no processes on any GPU")
    _warn(err, inv)


def render_top(inv: Inventory, *, interval: float | None = None) -> Group | Text:
    """One frame of `gpu top`: a row per process, GPU figures on the GPU's first row."""
    if not inv.available:
        return Text(inv.headline)
    stamp = datetime.fromtimestamp(inv.taken_at).strftime("%H:%M:%S")
    every = f", every {interval:g} s" if interval else ""
    table = Table(title=f"labgpu gpu top  {stamp}{every}", expand=False)
    for col in ("GPU", "util", "memory", "member", "container", "process", "GPU memory"):
        table.add_column(col, justify="right" if col in ("GPU", "util", "GPU memory") else "left")
    for g in inv.gpus:
        s = g.gpu
        first = [f"{s.index}", _pct(s.utilization) if not s.mig_enabled else "MIG", _memory(g)]
        if s.error:
            table.add_row(str(s.index), "-", "-", Text(s.error, style="red"), "", "", "")
            continue
        if not g.processes:
            table.add_row(*first, Text("-", style="dim"), "", Text("idle", style="dim"), "")
        for n, p in enumerate(g.processes):
            cells = first if n == 0 else ["", "", ""]
            table.add_row(
                *cells,
                Text(p.member or "-"),
                Text(p.owner.label, style="dim" if not p.owner.in_container else ""),
                Text(f"{p.pid} {p.command or '?'}"),
                _size(p.used_memory),
            )
    notes = [Text(f"warning: {w}", style="yellow") for w in inv.warnings]
    return Group(table, *notes)


@app.command("top")
def top(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.2, help="Seconds between refreshes.")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    replay: ReplayOpt = None,
    proc_root: ProcOpt = Path("/proc"),
) -> None:
    """A live table of GPU use: GPU, utilization, memory, member, container, process (Ctrl-C ends it)."""
    c = get_context(ctx)
    sweep = make_sweep(c, _source(replay), proc_root)
    inv = sweep()
    if once or not inv.available:
        c.console.print(render_top(inv), soft_wrap=True)
        return
    try:
        with Live(render_top(inv, interval=interval), console=c.console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render_top(sweep(), interval=interval), refresh=True)
    except KeyboardInterrupt:
        pass


@app.command("record")
def record(path: Annotated[Path, typer.Argument(help="JSON file to write.", dir_okay=False)]) -> None:
    """Save one raw NVML reading as JSON (for bug reports and test fixtures). Fails without NVML."""
    from labgpu.gpu.fake import record as record_reading
    from labgpu.gpu.nvml import NvmlSource

    reading = record_reading(NvmlSource(), path)
    processes = sum(len(g.processes) for g in reading.gpus)
    typer.echo(
        f"{path}: {len(reading.gpus)} GPU(s), {processes} process(es), driver {reading.driver_version}"
    )


def agent(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. Default: the agent_host setting.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on. Default: the agent_port setting.")
    ] = None,
    replay: ReplayOpt = None,
) -> None:
    """Serve this host's GPU inventory (GET /v1/gpus) and Prometheus metrics (GET /metrics).

    Needs the agent_token setting unless it listens on a loopback address."""
    import uvicorn

    from labgpu.gpu.agent import check_exposure, create_agent_app

    c = get_context(ctx)
    settings = c.settings
    bind_host = host or settings.agent_host
    bind_port = port or settings.agent_port
    token = settings.agent_token.get_secret_value() if settings.agent_token else None
    check_exposure(bind_host, token)
    app_ = create_agent_app(sweep=make_sweep(c, _source(replay)), token=token)
    auth = "bearer token required" if token else "no token: loopback only"
    c.console.print(f"labgpu agent on [bold]http://{bind_host}:{bind_port}/[/] ({auth}; Ctrl-C stops it)")
    uvicorn.run(app_, host=bind_host, port=bind_port, log_level="info")
