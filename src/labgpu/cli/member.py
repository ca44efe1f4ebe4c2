"""`labgpu member`: members and their containers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.panel import Panel
from rich.table import Table

from labgpu.cli.context import CliContext, get_context, print_json
from labgpu.domain.members import format_size
from labgpu.errors import BadInput

app = typer.Typer(help="Members and their containers.", no_args_is_help=True)
key_app = typer.Typer(help="A member's SSH public keys.", no_args_is_help=True)
app.add_typer(key_app, name="key")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _read_key_files(paths: list[Path]) -> list[str]:
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text())
        except OSError as exc:
            raise BadInput(f"cannot read key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"key file {path} is not text") from None
    return texts


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
    lines += ["~/.ssh/config:", sheet.ssh_config().rstrip()]
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
    as_json: JsonOpt = False,
) -> None:
    """Add a member: home folder, ports, container, SSH; prints the connection sheet."""
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
        ssh_keys=_read_key_files(ssh_key or []),
        rdp=rdp,
        vnc=vnc,
        email=email,
    )
    if as_json:
        sheet = add_member(svc, request)
        print_json(sheet.as_dict(with_password=True))
        return
    with c.console.status(f"provisioning {name}'s container"):
        sheet = add_member(svc, request)
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
            i.gpus,
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


@key_app.command("add")
def key_add(
    ctx: typer.Context, name: str, files: Annotated[list[Path], typer.Argument(help="Public key files.")]
) -> None:
    """Add SSH public keys to a member's container."""
    from labgpu.services.members import add_keys

    c = get_context(ctx)
    added = add_keys(c.services, name, _read_key_files(files))
    c.console.print(f"added {len(added)} key(s)" + "".join(f"\n  {fp}" for fp in added))


@key_app.command("rm")
def key_rm(
    ctx: typer.Context, name: str, key: Annotated[str, typer.Argument(help="Fingerprint or comment.")]
) -> None:
    """Remove an SSH public key."""
    from labgpu.services.members import remove_key

    c = get_context(ctx)
    c.console.print(f"removed {remove_key(c.services, name, key)}")


@key_app.command("list")
def key_list(ctx: typer.Context, name: str, as_json: JsonOpt = False) -> None:
    """List a member's SSH public keys."""
    from labgpu.services.members import list_keys

    c = get_context(ctx)
    keys = list_keys(c.services, name)
    if as_json:
        print_json(keys)
        return
    table = Table("fingerprint", "comment")
    for k in keys:
        table.add_row(k["fingerprint"], k["comment"])
    c.console.print(table)
