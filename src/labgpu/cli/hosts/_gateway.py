"""`labgpu host gateway`: members `ssh NAME@host` on the host's SSH port and land in their container."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt

gateway_app = typer.Typer(
    help="The login gateway: `ssh NAME@host` lands a member in their own container.", no_args_is_help=True
)

SshdConfigOpt = Annotated[
    Path,
    typer.Option("--sshd-config", help="The main sshd_config, to check what sshd would really do."),
]
NoReloadOpt = Annotated[
    bool, typer.Option("--no-reload", help="Do not reload sshd (e.g. when you restart it yourself).")
]

STYLE = {
    "created": "green",
    "changed": "yellow",
    "removed": "yellow",
    "unchanged": "dim",
    "ok": "green",
    "absent": "dim",
    "unknown": "yellow",
    "needs-attention": "bold red",
}


def _print_report(console: Console, report: Any) -> None:
    from labgpu.services.hosts import GatewayReport

    assert isinstance(report, GatewayReport)
    width = max((len(s.step) for s in report.steps), default=0)
    for step in report.steps:
        style = STYLE.get(step.status, "")
        console.print(
            f"  [{style}]{step.status:<15}[/] {escape(step.step):<{width}}  {escape(step.detail)}",
            highlight=False,
            soft_wrap=True,
        )
    for name, password in report.passwords.items():
        console.print(
            f"[bold]password for {escape(name)}:[/] {escape(password)} (shown once; to change at first login)"
        )
    for note in report.notes:
        console.print(f"[bold yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


@gateway_app.command("enable")
def enable(
    ctx: typer.Context,
    sshd_config: SshdConfigOpt = Path("/etc/ssh/sshd_config"),
    no_reload: NoReloadOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Install the gateway: the group, labgpu-login, the sudo helper and its rule, the sshd drop-in, and a
    host account for every member (their keys from the store, no usable host shell). Idempotent.

    Exit code 1 when something needs attention (e.g. sshd does not include the drop-in)."""
    from labgpu.services.hosts import enable_gateway as run_enable

    c = get_context(ctx)
    report = run_enable(c.services, sshd_main_config=sshd_config, reload=not no_reload)
    if as_json:
        print_json(report.as_dict())
    else:
        _print_report(c.console, report)
        c.console.print(
            f"gateway enabled: members log in with `ssh NAME@{escape(_address(c))}` (port 22 of this host)"
        )
    if report.needs_attention:
        raise typer.Exit(1)


def _address(c: Any) -> str:
    from labgpu.services.hosts import local_host, public_address

    try:
        with c.services.session() as session:
            return public_address(local_host(session, c.services.runtime), c.settings)
    except Exception:
        return "this-host"


@gateway_app.command("disable")
def disable(ctx: typer.Context, no_reload: NoReloadOpt = False, as_json: JsonOpt = False) -> None:
    """Remove the gateway: drop-in, sudo rule, the members' host accounts, the programs and the group.
    Containers, homes and the direct SSH ports are not touched."""
    from labgpu.services.hosts import disable_gateway as run_disable

    c = get_context(ctx)
    report = run_disable(c.services, reload=not no_reload)
    if as_json:
        print_json(report.as_dict())
        return
    _print_report(c.console, report)
    c.console.print("gateway disabled: members use their direct SSH ports")


@gateway_app.command("sync")
def sync(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Bring accounts, keys and the map in line with the store (labgpu boot runs this too)."""
    from labgpu.errors import ConfigError
    from labgpu.services.hosts import gateway_enabled as is_enabled
    from labgpu.services.hosts import sync_gateway as run_sync

    c = get_context(ctx)
    if not is_enabled(c.settings):
        raise ConfigError("the login gateway is not enabled", hint="run `labgpu host gateway enable` first")
    report = run_sync(c.services)
    if as_json:
        print_json(report.as_dict())
        return
    _print_report(c.console, report)
    if not report.steps:
        c.console.print("nothing to change")
    if report.needs_attention:
        raise typer.Exit(1)


@gateway_app.command("add-user")
def add_user(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The member.")],
    as_json: JsonOpt = False,
) -> None:
    """Create (or repair) one member's gateway account and copy their keys from the store."""
    from labgpu.services.hosts import add_gateway_user as run_add

    c = get_context(ctx)
    report = run_add(c.services, name)
    if as_json:
        print_json(report.as_dict())
        return
    _print_report(c.console, report)
    if not report.steps:
        c.console.print(f"{name}'s gateway account is in place")


@gateway_app.command("remove-user")
def remove_user(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The member.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete one member's gateway account (the member and their container stay)."""
    from labgpu.services.hosts import remove_gateway_user as run_remove

    c = get_context(ctx)
    report = run_remove(c.services, name)
    if as_json:
        print_json(report.as_dict())
        return
    _print_report(c.console, report)
    if not report.steps:
        c.console.print(f"{name} has no gateway account")


@gateway_app.command("status")
def status(
    ctx: typer.Context, sshd_config: SshdConfigOpt = Path("/etc/ssh/sshd_config"), as_json: JsonOpt = False
) -> None:
    """What is installed, whether it is current, and every member's account. Exit code 1 when something
    needs attention."""
    from labgpu.services.hosts import gateway_status as run_status

    c = get_context(ctx)
    result = run_status(c.services, sshd_main_config=sshd_config)
    if as_json:
        print_json(result.as_dict())
    else:
        c.console.print("gateway " + ("[green]enabled[/]" if result.enabled else "[dim]not enabled[/]"))
        width = max((len(s.step) for s in result.checks), default=0)
        for check in result.checks:
            style = STYLE.get(check.status, "")
            c.console.print(
                f"  [{style}]{check.status:<15}[/] {escape(check.step):<{width}}  {escape(check.detail)}",
                highlight=False,
                soft_wrap=True,
            )
        if result.accounts:
            table = Table("member", "host account", "uid", "keys")
            for a in result.accounts:
                account = "yes" if a["account"] else "[red]missing[/]"
                if not a["member"]:
                    account = "[yellow]member gone[/]"
                table.add_row(a["name"], account, str(a["uid"] or "-"), str(a["keys"]))
            c.console.print(table)
    if result.enabled and not result.ok:
        raise typer.Exit(1)
