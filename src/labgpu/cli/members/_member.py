"""`labgpu member`: members and their containers (add, list, show, power, passwd, set, reset, snapshots,
rm, move)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from labgpu.cli.context import CliContext, get_context, print_json
from labgpu.cli.members._keys import read_key_files
from labgpu.cli.options import JsonOpt, YesOpt, confirm
from labgpu.cli.steps import LiveSteps
from labgpu.domain.members import format_size

app = typer.Typer(help="Members and their containers.", no_args_is_help=True)


def print_sheet(c: CliContext, sheet: object) -> None:
    from labgpu.services.members import ConnectionSheet

    assert isinstance(sheet, ConnectionSheet)
    lines = [
        f"[bold]{sheet.name}[/]'s container [bold]{sheet.container}[/] is {sheet.state} on {sheet.host}.",
        "",
        f"SSH:      [bold]{sheet.ssh_command()}[/]",
    ]
    for purpose, port in sheet.ports.items():
        if purpose != "ssh":
            lines.append(f"{purpose.upper()}:      {sheet.address}:{port}")
    lines += [f"Home:     {sheet.container_home} (kept on the host in {sheet.home})", ""]
    if sheet.initial_password:
        lines += [
            f"Initial password (shown once; must be changed at first login): [bold]{sheet.initial_password}[/]",
            "",
        ]
        if "rdp" in sheet.ports or "vnc" in sheet.ports:
            lines += [
                "A remote desktop cannot change it: for RDP, the member sets a password of their own on the "
                "portal's My container page (Password), no SSH needed; VNC has its own password there.",
                "",
            ]
    else:
        lines += [
            "Log in with the SSH key (no password is set; sudo needs none). A password for the remote "
            "desktop (RDP), and the VNC password: the portal's My container page.",
            "",
        ]
    lines += ["~/.ssh/config:", sheet.ssh_config().rstrip()]
    lines += ["", *(f"[dim]{escape(note)}[/]" for note in sheet.notes)] if sheet.notes else []
    c.console.print(Panel("\n".join(lines), title="connection sheet", expand=False), soft_wrap=True)
    rdp = sheet.rdp_file()
    if rdp:
        c.console.print("RDP file (save as labgpu.rdp):\n" + rdp.replace("\r\n", "\n"))


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Member name: also their container's name.")],
    template: Annotated[
        str | None, typer.Option(help="Template (image alias). Default: default_template.")
    ] = None,
    cpu: Annotated[int | None, typer.Option(help="CPU cores limit.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit, e.g. 32GiB.")] = None,
    disk: Annotated[
        str | None, typer.Option(help="Root disk size, where the pool supports it, e.g. 100GiB.")
    ] = None,
    gpus: Annotated[
        str | None, typer.Option(help="all, none, or indexes such as 0,2. Default: default_gpus.")
    ] = None,
    share: Annotated[list[str] | None, typer.Option("--share", help="Share to mount (repeatable).")] = None,
    ssh_key: Annotated[
        list[Path] | None, typer.Option("--ssh-key", help="Public key file (repeatable).", exists=False)
    ] = None,
    rdp: Annotated[
        bool, typer.Option("--rdp", help="Forward a port to RDP (3389) when the template has xrdp.")
    ] = False,
    vnc: Annotated[
        bool, typer.Option("--vnc", help="Forward a port to VNC (5901) when the template has it.")
    ] = False,
    email: Annotated[str | None, typer.Option(help="The member's e-mail address.")] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Host for the container. Default: chosen by placement.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a member: home folder, ports, container, SSH; prints the connection sheet.

    The container goes to the host placement chooses (free GPUs, CPU and memory, fewest containers;
    never a drained host), or to --host; the sheet says which and why."""
    from labgpu.services.members import add_member, validate_request

    c = get_context(ctx)
    svc = c.services
    request = validate_request(
        svc,
        name=name,
        template=template,
        cpu=cpu,
        memory=memory,
        disk=disk,
        gpus=gpus,
        shares=share or [],
        ssh_keys=read_key_files(ssh_key or []),
        rdp=rdp,
        vnc=vnc,
        email=email,
        host=host,
    )
    if as_json:
        sheet = add_member(svc, request)
        print_json(sheet.as_dict(with_password=True))
        return
    with LiveSteps(c.console) as steps:
        sheet = add_member(svc, request, report=steps)
    print_sheet(c, sheet)


@app.command("list")
def list_(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Members with their container's state, ports and limits."""
    from labgpu.services.members import list_members

    c = get_context(ctx)
    infos = list_members(c.services)
    if as_json:
        print_json([i.as_dict() for i in infos])
        return
    table = Table("member", "state", "container", "ssh", "gpus", "cpu", "memory", "template")
    for i in infos:
        table.add_row(
            i.name,
            i.state,
            f"{i.container} ({i.status})",
            f"{i.address}:{i.ports['ssh']}" if "ssh" in i.ports else "-",
            f"{i.gpus} (off: no-GPU mode)" if i.no_gpu else i.gpus,
            str(i.cpu or "-"),
            format_size(i.memory_bytes) if i.memory_bytes else "-",
            i.template or "-",
        )
    c.console.print(table if infos else "no members yet: add one with `labgpu member add NAME`")


@app.command("show")
def show(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """One member (never their password)."""
    from labgpu.services.members import get_member

    c = get_context(ctx)
    info = get_member(c.services, name)
    if as_json:
        print_json(info.as_dict())
        return
    table = Table(show_header=False)
    for key, value in info.as_dict().items():
        table.add_row(key, str(value))
    c.console.print(table)


def _power(ctx: typer.Context, name: str, action: str, force: bool) -> None:
    from labgpu.services.members import set_power

    c = get_context(ctx)
    status = set_power(c.services, name, action, force=force)
    c.console.print(f"{name}: {status}")


@app.command("start")
def start(ctx: typer.Context, name: str) -> None:
    """Start a member's container."""
    _power(ctx, name, "start", False)


@app.command("stop")
def stop(
    ctx: typer.Context,
    name: str,
    force: Annotated[bool, typer.Option(help="Kill instead of shutting down.")] = False,
) -> None:
    """Stop a member's container (it stays stopped, also across reboots, until started)."""
    _power(ctx, name, "stop", force)


@app.command("restart")
def restart(
    ctx: typer.Context,
    name: str,
    force: Annotated[bool, typer.Option(help="Kill instead of shutting down.")] = False,
) -> None:
    """Restart a member's container."""
    _power(ctx, name, "restart", force)


@app.command("passwd")
def passwd(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """Set a new random initial password (to be changed at the next login) and print it once."""
    from labgpu.services.members import reset_password

    c = get_context(ctx)
    password = reset_password(c.services, name)
    if as_json:
        print_json({"name": name, "initial_password": password})
    else:
        c.console.print(f"new initial password for {name} (shown once): [bold]{password}[/]")


# Changing, rebuilding and removing ----------------------------------------------------------------


@app.command("set")
def set_(
    ctx: typer.Context,
    name: str,
    cpu: Annotated[str | None, typer.Option(help="CPU cores limit, or none for the default.")] = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory limit, e.g. 32GiB, or none for the default.")
    ] = None,
    disk: Annotated[
        str | None, typer.Option(help="Root disk size, e.g. 100GiB (where the pool supports it), or none.")
    ] = None,
    gpus: Annotated[str | None, typer.Option(help="all, none, or indexes such as 0,2.")] = None,
    share: Annotated[list[str] | None, typer.Option("--share", help="Attach a share (repeatable).")] = None,
    no_share: Annotated[
        list[str] | None, typer.Option("--no-share", help="Detach a share (repeatable).")
    ] = None,
    rdp: Annotated[
        bool | None, typer.Option("--rdp/--no-rdp", help="Forward (or stop forwarding) a port to RDP 3389.")
    ] = None,
    vnc: Annotated[
        bool | None, typer.Option("--vnc/--no-vnc", help="Forward (or stop forwarding) a port to VNC 5901.")
    ] = None,
    no_gpu: Annotated[
        bool | None,
        typer.Option(
            "--no-gpu/--gpu",
            help="No-GPU mode: detach every GPU from the container (its GPU choice is kept), or give them back.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a member's limits, GPUs, shares and ports; applied live when the container runs."""
    from labgpu.services.members import parse_set_request, set_member

    c = get_context(ctx)
    given = any(v is not None for v in (cpu, memory, disk, gpus, rdp, vnc)) or bool(share or no_share)
    if no_gpu is not None and not given:
        _set_no_gpu(c, name, no_gpu, as_json=as_json)
        return
    request = parse_set_request(
        cpu=cpu,
        memory=memory,
        disk=disk,
        gpus=gpus,
        add_shares=share or [],
        remove_shares=no_share or [],
        rdp=rdp,
        vnc=vnc,
    )
    changes = set_member(c.services, name, request)
    if as_json:
        out: dict[str, object] = {"name": name, "changes": [ch.as_dict() for ch in changes]}
        if no_gpu is not None:
            from labgpu.services.gpus import set_no_gpu

            out["no_gpu"] = set_no_gpu(c.services, name, no_gpu).as_dict()
        print_json(out)
        return
    if not changes:
        c.console.print(f"{name}: nothing to change, it is set that way already")
    else:
        table = Table("setting", "from", "to", "applied", "note", title=f"{name}: changed")
        for ch in changes:
            table.add_row(ch.setting, ch.old, ch.new, ch.applied, ch.note)
        c.console.print(table)
    if no_gpu is not None:
        _set_no_gpu(c, name, no_gpu, as_json=False)


def _set_no_gpu(c: CliContext, name: str, no_gpu: bool, *, as_json: bool) -> None:
    from labgpu.services.gpus import set_no_gpu

    outcome = set_no_gpu(c.services, name, no_gpu)
    if as_json:
        print_json(outcome.as_dict())
        return
    state = "no GPU (every GPU detached; its GPU choice is kept)" if no_gpu else "GPUs on"
    if outcome.applied == "unchanged":
        c.console.print(f"{name}: {state} already")
    else:
        c.console.print(f"{name}: {state}, applied {outcome.applied}")
    for note in outcome.notes:
        c.console.print(f"  {escape(note)}")


@app.command("reset")
def reset(
    ctx: typer.Context,
    name: str,
    template: Annotated[
        str | None,
        typer.Option(
            help="Rebuild from this template (image alias) instead of the member's: a lab template, or "
            "one of the member's own (member/NAME/LABEL, see `member template list`)."
        ),
    ] = None,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild a member's container from its template; the home, ports and SSH keys are kept.

    Everything outside the home folder (installed packages, the password, snapshots) is lost.
    A new initial password is printed once."""
    from labgpu.services.members import count_snapshots, get_member, reset_member

    c = get_context(ctx)
    svc = c.services
    info = get_member(svc, name, live=False)
    snaps = count_snapshots(svc, name)
    lost = f" and its {snaps} snapshot(s)" if snaps else ""
    confirm(
        f"Rebuild {name}'s container from {template or info.template or svc.settings.default_template}? "
        f"Its root filesystem{lost} will be deleted; the home {info.home} is kept.",
        yes=yes,
    )
    if as_json:
        print_json(reset_member(svc, name, template=template).as_dict(with_password=True))
        return
    with LiveSteps(c.console) as steps:
        sheet = reset_member(svc, name, template=template, report=steps)
    c.console.print(f"{name}'s container was rebuilt; home, ports and SSH keys kept.")
    print_sheet(c, sheet)


@app.command("snapshot")
def snapshot(
    ctx: typer.Context,
    name: str,
    snap: Annotated[
        str | None,
        typer.Argument(metavar="[SNAPSHOT]", help="Name. Default: snap-YYYYMMDD-HHMMSS (UTC), rotated."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Snapshot a member's container (its root filesystem; NOT the home folder)."""
    from labgpu.services.members import HOME_NOTE, take_snapshot

    c = get_context(ctx)
    taken = take_snapshot(c.services, name, snap)
    if as_json:
        print_json(taken.as_dict())
        return
    c.console.print(f"snapshot [bold]{taken.snapshot.name}[/] of {name} taken")
    if taken.pruned:
        c.console.print(f"deleted older automatic snapshot(s): {', '.join(taken.pruned)}")
    c.console.print(f"[dim]note: {HOME_NOTE}[/]")


@app.command("snapshots")
def snapshots(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """List a member's snapshots, oldest first."""
    from labgpu.services.members import HOME_NOTE, list_snapshots

    c = get_context(ctx)
    snaps = list_snapshots(c.services, name)
    if as_json:
        print_json([s.as_dict() for s in snaps])
        return
    if not snaps:
        c.console.print(f"{name} has no snapshots: take one with `labgpu member snapshot {name}`")
        return
    table = Table("snapshot", "taken (UTC)", "kind")
    for s in snaps:
        table.add_row(s.name, s.created_at[:19].replace("T", " "), "automatic" if s.automatic else "named")
    c.console.print(table)
    c.console.print(
        f"[dim]automatic snapshots beyond {c.services.settings.snapshots_keep} are deleted, oldest "
        f"first; {HOME_NOTE}[/]"
    )


@app.command("restore")
def restore(
    ctx: typer.Context,
    name: str,
    snap: Annotated[str, typer.Argument(metavar="SNAPSHOT", help="The snapshot to go back to.")],
    yes: YesOpt = False,
) -> None:
    """Roll a member's container back to a snapshot (the home folder is not touched)."""
    from labgpu.services.members import HOME_NOTE, restore_snapshot

    c = get_context(ctx)
    confirm(
        f"Roll {name}'s container back to {snap}? Changes to its root filesystem since then are lost "
        "(a running container is restarted).",
        yes=yes,
    )
    status = restore_snapshot(c.services, name, snap)
    c.console.print(f"{name} restored to {snap} ({status}); limits, ports, shares and SSH keys are current")
    c.console.print(f"[dim]note: {HOME_NOTE}[/]")


@app.command("snapshot-rm")
def snapshot_rm(
    ctx: typer.Context,
    name: str,
    snap: Annotated[str, typer.Argument(metavar="SNAPSHOT")],
    yes: YesOpt = False,
) -> None:
    """Delete one of a member's snapshots."""
    from labgpu.services.members import delete_snapshot

    c = get_context(ctx)
    confirm(f"Delete snapshot {snap} of {name}?", yes=yes)
    delete_snapshot(c.services, name, snap)
    c.console.print(f"deleted snapshot {snap} of {name}")


@app.command("rm")
def rm(
    ctx: typer.Context,
    name: str,
    purge: Annotated[
        bool, typer.Option("--purge", help="Delete the home folder too, instead of archiving it.")
    ] = False,
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a member: delete their container and free their ports; the home is archived."""
    from labgpu.services.members import get_member, remove_member

    c = get_context(ctx)
    svc = c.services
    info = get_member(svc, name, live=False)
    home = (
        f"DELETE the home folder {info.home} (--purge)"
        if purge
        else f"move the home folder to {svc.settings.home_archive}/"
    )
    confirm(
        f"Remove {name}: delete container {info.container} and its snapshots, free ports, {home}?", yes=yes
    )
    removal = remove_member(svc, name, purge=purge)
    if as_json:
        print_json(removal.as_dict())
        return
    ports = ", ".join(f"{p} {n}" for p, n in removal.freed_ports.items()) or "none"
    c.console.print(f"removed {name}; ports freed: {ports}")
    if removal.archived_to:
        c.console.print(f"home archived to [bold]{removal.archived_to}[/]")
    elif removal.purged:
        c.console.print(f"home {removal.home} deleted")
    for note in removal.notes:
        c.console.print(f"[dim]note: {note}[/]")


# Moving to another host ---------------------------------------------------------------------------


@app.command("move")
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
    with LiveSteps(c.console) as steps:
        result = move_member(c.services, name, to, report=steps)
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
        "  the member was notified"
        if result.mailed
        else "  nobody notified (no address, no SMTP, no channel)"
    )
