"""`labgpu host`: set this host up (init, install-services) and manage the others (add, list, rm, drain,
undrain, set). The login gateway is `labgpu host gateway` (:mod:`._gateway`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt
from labgpu.errors import BadInput, LabgpuError, Unavailable

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
    restart: Annotated[
        bool,
        typer.Option(
            "--restart/--no-restart",
            help="Restart the LXD/Incus daemon (its instances keep running) when /etc/subuid or /etc/subgid "
            "changed: it reads them at start only.",
        ),
    ] = True,
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
            cli.runtime,
            settings,
            force=force,
            dry_run=dry_run,
            nat=nat,
            pool_size=pool_size,
            paths=paths,
            restart_daemon=restart,
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


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            help="Name for the host (for a cluster: for the cluster; its members keep their own names)."
        ),
    ],
    url: Annotated[
        str,
        typer.Argument(
            help="https://ADDRESS[:8443] of the daemon (any member of a cluster), or unix:///path/unix.socket."
        ),
    ],
    public_address: Annotated[
        str | None,
        typer.Option("--public-address", help="Address members connect to. Default: the URL's address."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="One-time trust token from `incus config trust add labgpu` (LXD: `lxc config trust add --name labgpu`) on that host.",
        ),
    ] = None,
    password: Annotated[
        bool,
        typer.Option("--password", help="Ask for LXD's legacy trust password (core.trust_password) instead."),
    ] = False,
    fingerprint: Annotated[
        str | None,
        typer.Option("--fingerprint", help="The daemon's certificate fingerprint you expect (hex)."),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Pin the certificate the daemon presents without asking.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a standalone LXD/Incus server, or a whole cluster, reached over HTTPS.

    labgpu pins the daemon's certificate (it must match the token's, --fingerprint, or you confirm it),
    and has its own client certificate trusted with the token or password. A cluster's members become
    hosts named like the members."""
    from labgpu.services.hosts import add_host

    c = get_context(ctx)
    secret = None
    if password:
        if token:
            raise BadInput("give --token or --password, not both")
        secret = typer.prompt("trust password", hide_input=True)

    def confirm(fp: str) -> bool:
        if yes:
            return True
        if as_json:
            return False
        c.console.print(
            f"The daemon at {escape(url)} presents a certificate with fingerprint\n  [bold]{fp}[/]"
        )
        return typer.confirm("Is that its certificate (compare with `incus info` / `lxc info` on that host)?")

    added = add_host(
        c.services,
        name,
        url,
        public_address=public_address,
        token=token,
        password=secret,
        fingerprint=fingerprint,
        confirm=confirm,
    )
    if as_json:
        print_json(added.as_dict())
        return
    what = f"cluster {added.cluster} ({len(added.names)} members)" if added.cluster else "host"
    c.console.print(
        f"added {what}: {escape(', '.join(added.names))} ({added.kind} {added.version}, {escape(added.url)})",
        highlight=False,
    )
    if added.fingerprint:
        c.console.print(f"  pinned certificate {added.fingerprint}", highlight=False)
    if added.trusted_now:
        c.console.print("  labgpu's certificate is now trusted by the daemon", highlight=False)
    for note in added.notes:
        c.console.print(f"  {escape(note)}", highlight=False)


def _size(value: int | None) -> str:
    if not value:
        return "-"
    gib = value / 1024**3
    return f"{gib:.0f}GiB" if gib >= 10 else f"{gib:.1f}GiB"


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every host with its kind, version, CPUs, memory, GPUs and containers, asked in parallel.

    A host that does not answer within host_timeout is shown as unreachable; the others are not held up."""
    from labgpu.services.hosts import host_facts

    c = get_context(ctx)
    facts = host_facts(c.services)
    if as_json:
        print_json([f.as_dict() for f in facts])
        return
    table = Table("host", "kind", "address", "CPUs", "memory", "GPUs", "containers", "state")
    for f in facts:
        name = (
            f.name
            + (" (local)" if f.local else "")
            + (f"\n[dim]cluster {escape(f.cluster)}[/]" if f.cluster else "")
        )
        if f.reachable:
            gpus = ", ".join(g.product or g.vendor or g.pci_address for g in f.gpus) or "none"
            state = "[yellow]drained[/]" if f.drained else "[green]ok[/]"
            table.add_row(
                name,
                f"{f.kind} {f.version}",
                escape(f.address),
                str(f.cpu_threads or "-"),
                f"{_size(f.memory_used)} / {_size(f.memory_total)}",
                escape(gpus),
                f"{f.containers} ({f.running} running)",
                state + f" [dim]{f.seconds:.1f}s[/]",
            )
        else:
            state = f"[bold red]unreachable[/]: {escape(f.error or '')}" + (
                " [yellow](drained)[/]" if f.drained else ""
            )
            table.add_row(name, f.kind, escape(f.address), "-", "-", "-", "-", state)
    c.console.print(table)


@app.command("rm")
def rm(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="A host, or the name a cluster was added as (all its members).")
    ],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Even when members live there: they are unplaced, to be re-made elsewhere."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Forget a host. Its containers are never touched; labgpu's certificate is dropped from its trust list."""
    from labgpu.services.hosts import remove_host

    c = get_context(ctx)
    removed = remove_host(c.services, name, force=force)
    if as_json:
        print_json(removed.as_dict())
        return
    c.console.print(f"removed host(s) {escape(', '.join(removed.names))}", highlight=False)
    for note in removed.notes:
        c.console.print(f"  {escape(note)}", highlight=False)


@app.command("drain")
def drain(ctx: typer.Context, name: str) -> None:
    """No new containers on this host (or cluster); its members stay where they are."""
    from labgpu.services.hosts import set_drained

    c = get_context(ctx)
    names = set_drained(c.services, name, True)
    c.console.print(f"drained {escape(', '.join(names))}: new containers go elsewhere", highlight=False)


@app.command("undrain")
def undrain(ctx: typer.Context, name: str) -> None:
    """New containers may be placed on this host (or cluster) again."""
    from labgpu.services.hosts import set_drained

    c = get_context(ctx)
    names = set_drained(c.services, name, False)
    c.console.print(f"{escape(', '.join(names))} take(s) new containers again", highlight=False)


@app.command("set")
def set_(
    ctx: typer.Context,
    name: str,
    public_address: Annotated[
        str | None, typer.Option("--public-address", help="Address members connect to; 'none' clears it.")
    ] = None,
    agent_url: Annotated[
        str | None,
        typer.Option(
            "--agent-url",
            help="Where the host's `labgpu agent` answers (http://ADDRESS:9410): the portal reads the "
            "host's GPU usage from it; 'none' clears it.",
        ),
    ] = None,
) -> None:
    """Change a host's public address (what connection sheets tell members) or its GPU agent's address."""
    from labgpu.services.hosts import set_agent_url, set_public_address

    if public_address is None and agent_url is None:
        raise BadInput("nothing to change: give --public-address or --agent-url")
    c = get_context(ctx)
    if public_address is not None:
        value = None if public_address.strip().lower() in ("none", "") else public_address
        set_public_address(c.services, name, value)
        c.console.print(f"{escape(name)}: public address {escape(value or '(default)')}", highlight=False)
    if agent_url is not None:
        clear = agent_url.strip().lower() in ("none", "")
        stored = set_agent_url(c.services, name, None if clear else agent_url)
        shown = stored or "(none: only a host on this machine is read, in process)"
        c.console.print(f"{escape(name)}: GPU agent {escape(shown)}", highlight=False)


@app.command("install-services")
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
