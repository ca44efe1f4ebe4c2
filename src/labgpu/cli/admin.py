"""`labgpu admin`: portal accounts. There are no default accounts: `admin create` makes the first admin."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.errors import BadInput

app = typer.Typer(
    help="Portal accounts: create admins, set passwords, disable and enable.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from the first line of standard input (for scripts)."
    ),
]


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise BadInput("no password on standard input")
        return password
    prompted: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return prompted


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(help="Account name (like a member name: lower-case letters, digits, -).")
    ],
    email: Annotated[str | None, typer.Option(help="E-mail address (for notifications).")] = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Create an admin account for the portal (asks for the password twice, hidden)."""
    from labgpu.services import portal
    from labgpu.store.models import Role

    c = get_context(ctx)
    svc = c.store_services
    password = _read_password(password_stdin)
    info = portal.create_account(svc, name=name, password=password, email=email, role=Role.ADMIN)
    c.console.print(f"admin [bold]{info.name}[/] created; log in at the portal (labgpu serve) with this name")


@app.command("passwd")
def passwd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Account (member) name.")],
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Set a member's portal password (ends their login sessions). Also for a forgotten admin password."""
    from labgpu.services import portal

    c = get_context(ctx)
    svc = c.store_services
    portal.set_password(svc, name=name, password=_read_password(password_stdin))
    c.console.print(f"portal password of [bold]{name}[/] set; their login sessions have ended")


def _set_disabled(ctx: typer.Context, name: str, *, disabled: bool) -> None:
    from labgpu.services import portal

    c = get_context(ctx)
    svc = c.store_services
    changed = portal.set_disabled(svc, name, disabled=disabled)
    word = "disabled" if disabled else "enabled"
    if not changed:
        c.console.print(f"{name} was already {word}")
    elif disabled:
        c.console.print(f"{name} disabled: their login sessions ended and their API tokens were revoked")
    else:
        c.console.print(f"{name} enabled")


@app.command("disable")
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    """Disable an account: no login; its sessions end and its API tokens are revoked at once."""
    _set_disabled(ctx, name, disabled=True)


@app.command("enable")
def enable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    """Enable a disabled account again (revoked API tokens stay revoked)."""
    _set_disabled(ctx, name, disabled=False)


@app.command("list")
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", help="Every member's account, not only admins.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List admin accounts (or every account with --all)."""
    from labgpu.services import portal

    c = get_context(ctx)
    svc = c.store_services
    rows = portal.list_accounts(svc, admins_only=not all_)
    if json_:
        print_json([r.as_dict() for r in rows])
        return
    if not rows:
        c.console.print("no accounts yet; create the first admin with `labgpu admin create NAME`")
        return
    table = Table("name", "role", "e-mail", "password", "state", "last login")
    for r in rows:
        table.add_row(
            r.name,
            r.role,
            r.email or "",
            "set" if r.has_password else "none",
            "disabled" if r.disabled else "active",
            r.last_login_at.strftime("%Y-%m-%d %H:%M") if r.last_login_at else "never",
        )
    c.console.print(table)
