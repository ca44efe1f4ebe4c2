"""Many hosts, one view: `labgpu host add/list/rm/drain/undrain/set`, `labgpu container list` and
`labgpu member move` (registered on the host and member command groups)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.host import app
from labgpu.cli.member import app as member_app
from labgpu.domain.members import format_size
from labgpu.errors import BadInput

container_app = typer.Typer(help="Containers on every host.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


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


@container_app.command("list")
def container_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every instance on every host (one request per host, in parallel), with its member and ports."""
    from labgpu.services.hosts import list_containers

    c = get_context(ctx)
    rows = list_containers(c.services)
    if as_json:
        print_json([r.as_dict() for r in rows])
        return
    table = Table("host", "container", "status", "member", "ssh", "memory", "kind")
    for r in rows:
        if r.kind == "unreachable" and r.name == "-":
            table.add_row(
                escape(r.host), "-", f"[bold red]unreachable[/]: {escape(r.error or '')}", "", "", "", ""
            )
            continue
        ssh = f"{r.address}:{r.ports['ssh']}" if r.address and "ssh" in r.ports else "-"
        style = {"Running": "green", "missing": "bold red", "unreachable": "red"}.get(r.status, "")
        status = f"[{style}]{escape(r.status)}[/]" if style else escape(r.status)
        table.add_row(
            escape(r.host),
            escape(r.name),
            status,
            escape(r.member or "-"),
            escape(ssh),
            format_size(r.memory_usage) if r.memory_usage else "-",
            r.kind,
        )
    c.console.print(table if rows else "no hosts answered and none are known")


@member_app.command("move")
def member_move(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The member.")],
    to: Annotated[str, typer.Option("--to", help="The host to move the container to.")],
    as_json: JsonOpt = False,
) -> None:
    """Move a member's container to another host (cold: it is stopped, moved, started).

    Home, SSH keys, limits and the GPU request come along; the member gets ports on the new host and is
    told the new address by mail. Within a cluster the runtime moves it; between standalone hosts one
    daemon copies it to the other. The original is deleted only after the new one runs."""
    from labgpu.services.members import move_member

    c = get_context(ctx)
    if as_json:
        print_json(move_member(c.services, name, to).as_dict())
        return
    with c.console.status(f"moving {name}'s container to {to}"):
        result = move_member(c.services, name, to)
    user = c.services.settings.container_user
    c.console.print(
        f"moved {escape(name)} from {escape(result.source)} to {escape(result.dest)} ({result.how}); "
        f"{'running' if result.running else 'stopped, as before'}",
        highlight=False,
    )
    if "ssh" in result.ports:
        c.console.print(
            f"  SSH: [bold]ssh -p {result.ports['ssh']} {user}@{escape(result.address)}[/]", highlight=False
        )
    for purpose, port in result.ports.items():
        if purpose != "ssh":
            c.console.print(f"  {purpose.upper()}: {escape(result.address)}:{port}", highlight=False)
    for note in result.notes:
        c.console.print(f"  {escape(note)}", highlight=False)
    c.console.print(
        "  the member was told by mail" if result.mailed else "  no mail sent (no address or no SMTP)"
    )
