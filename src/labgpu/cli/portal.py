"""The portal feature on the command line: `labgpu admin ...` (portal accounts; there are no default
accounts: `admin create` makes the first admin), `labgpu notice ...` (messages to every member, at login
and on the portal), `labgpu auth test` (the log-in backends) and `labgpu serve` (the portal and JSON API). Mounted in :mod:`labgpu.cli.main`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from labgpu.cli.context import CliContext, get_context, print_json
from labgpu.cli.options import JsonOpt
from labgpu.errors import BadInput

if TYPE_CHECKING:
    from labgpu.system.tls import PortalTls

# Accounts -----------------------------------------------------------------------------------------


admin_app = typer.Typer(
    help="Portal accounts: create admins, set passwords, disable and enable, reset two-factor log-in.",
    no_args_is_help=True,
)

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


@admin_app.command("create")
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


@admin_app.command("passwd")
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


@admin_app.command("disable")
def disable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    """Disable an account: no login; its sessions end and its API tokens are revoked at once."""
    _set_disabled(ctx, name, disabled=True)


@admin_app.command("enable")
def enable(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    """Enable a disabled account again (revoked API tokens stay revoked)."""
    _set_disabled(ctx, name, disabled=False)


@admin_app.command("totp-reset")
def totp_reset(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="Account (member) name.")]
) -> None:
    """Turn off a member's two-factor log-in (TOTP) and recovery codes, e.g. for an admin who lost their
    phone: they log in with the password alone (and set it up again when it is required for admins)."""
    from labgpu.services import portal

    c = get_context(ctx)
    svc = c.store_services
    if portal.reset_totp(svc, name):
        c.console.print(
            f"two-factor log-in of [bold]{name}[/] removed; their password alone logs them in now"
        )
    else:
        c.console.print(f"{name} had no two-factor log-in")


@admin_app.command("list")
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
    with_totp = portal.totp_members(svc)
    if json_:
        print_json([{**r.as_dict(), "totp": r.name in with_totp} for r in rows])
        return
    if not rows:
        c.console.print("no accounts yet; create the first admin with `labgpu admin create NAME`")
        return
    table = Table("name", "role", "e-mail", "password", "2fa", "state", "last login")
    for r in rows:
        table.add_row(
            r.name,
            r.role,
            r.email or "",
            "set" if r.has_password else "none",
            "totp" if r.name in with_totp else "-",
            "disabled" if r.disabled else "active",
            r.last_login_at.strftime("%Y-%m-%d %H:%M") if r.last_login_at else "never",
        )
    c.console.print(table)


# Sign-on backends -------------------------------------------------------------------------------------


auth_app = typer.Typer(help="Log-in backends: local passwords, LDAP/AD, OIDC and CAS.", no_args_is_help=True)


@auth_app.command("test")
def auth_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The name to log in with (a labgpu name or a directory name).")],
    password_stdin: PasswordStdinOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Check a log-in against every configured backend: which accepted it, and why the others did not.

    Asks for the password (hidden). Nothing is written: no session, no throttle count. OIDC and CAS need
    a browser: their settings are shown. Exits 1 when no backend accepted the log-in."""
    from labgpu.services import portal

    c = get_context(ctx)
    password = _read_password(True) if password_stdin else str(typer.prompt("Password", hide_input=True))
    verdicts = portal.check_backends(c.store_services, name=name, password=password)
    if json_:
        print_json([{"backend": v.backend, "accepted": v.accepted, "detail": v.detail} for v in verdicts])
    else:
        table = Table("backend", "verdict", "why")
        for v in verdicts:
            table.add_row(v.backend, "[green]accepted[/]" if v.accepted else "refused", escape(v.detail))
        c.console.print(table)
    if not any(v.accepted for v in verdicts):
        raise typer.Exit(1)


# Notices ------------------------------------------------------------------------------------------


notice_app = typer.Typer(help="Notices shown to members at login and on the portal.", no_args_is_help=True)


@notice_app.command("add")
def notice_add(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="The text members see (up to 1000 characters).")],
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="When it stops being shown: 2h, 3d, 1w or 2025-06-01 18:00 (local time)."
        ),
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="When it starts being shown (default: now); same forms.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a notice; it shows in the gateway's login status and on the portal."""
    from labgpu.services.portal import add_notice, parse_when

    c = get_context(ctx)
    starts_at = parse_when(start) if start else None
    ends_at = parse_when(until, now=starts_at) if until else None
    info = add_notice(c.services, message, starts_at=starts_at, ends_at=ends_at)
    if as_json:
        print_json(info.as_dict())
        return
    shown = f"until {info.ends_at.astimezone():%Y-%m-%d %H:%M}" if info.ends_at else "until removed"
    c.console.print(f"notice {info.id} added ({shown})")


@notice_app.command("list")
def notice_list(
    ctx: typer.Context,
    include_past: Annotated[bool, typer.Option("--all", help="Also notices that have ended.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Notices in force or still to come."""
    from labgpu.services.portal import list_notices
    from labgpu.store.models import utcnow

    c = get_context(ctx)
    notices = list_notices(c.services, include_past=include_past)
    if as_json:
        print_json([n.as_dict() for n in notices])
        return
    if not notices:
        c.console.print("no notices: add one with `labgpu notice add MESSAGE --until 2h`")
        return
    now = utcnow()
    table = Table("id", "shown", "from", "until", "by", "message")
    for n in notices:
        state = "now" if n.active(now) else ("ended" if n.ends_at and n.ends_at <= now else "later")
        table.add_row(
            str(n.id),
            state,
            f"{n.starts_at.astimezone():%Y-%m-%d %H:%M}",
            f"{n.ends_at.astimezone():%Y-%m-%d %H:%M}" if n.ends_at else "removed",
            escape(n.created_by),
            escape(n.message),
        )
    c.console.print(table)


@notice_app.command("rm")
def notice_rm(
    ctx: typer.Context,
    notice_id: Annotated[int, typer.Argument(metavar="ID", help="The notice's id (notice list).")],
    as_json: JsonOpt = False,
) -> None:
    """Remove a notice now."""
    from labgpu.services.portal import remove_notice

    c = get_context(ctx)
    info = remove_notice(c.services, notice_id)
    if as_json:
        print_json(info.as_dict())
        return
    c.console.print(f"notice {info.id} removed")


# The portal ---------------------------------------------------------------------------------------


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. Default: the web_host setting.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on. Default: the web_port setting.")
    ] = None,
    apps_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the apps origin (members' web apps). Default: the apps_port setting; 0: none."
        ),
    ] = None,
) -> None:
    """Run the web portal and JSON API (migrates the database first), and the apps origin beside it.

    HTTPS on an address other than loopback (the web_tls settings: the admin's certificate or a generated
    one, whose SHA-256 fingerprint is printed); plain HTTP there is refused unless web_tls is "proxy"."""
    run_portal(get_context(ctx), host=host, port=port, apps_port=apps_port)


def run_portal(
    c: CliContext, *, host: str | None = None, port: int | None = None, apps_port: int | None = None
) -> None:
    """`labgpu serve` (and the end of `labgpu setup` without systemd): migrate, then serve until Ctrl-C. The apps
    origin (members' web apps, apps_port) is served by the same process and event loop, with the same TLS."""
    import uvicorn

    from labgpu.store.migrate import upgrade
    from labgpu.system.tls import portal_tls
    from labgpu.web.app import create_app

    settings = c.settings
    if apps_port is not None:
        settings = settings.model_copy(update={"apps_port": apps_port})
    bind_host = host or settings.web_host
    bind_port = port or settings.web_port
    tls = portal_tls(settings, bind_host)  # refused before anything else happens
    result = upgrade(settings)
    if result.changed:
        c.console.print(f"database migrated to revision {result.after}")
    settings.session_secret()  # create the key now rather than on the first request
    app = create_app(settings)
    shown = f"[{bind_host}]" if ":" in bind_host else bind_host
    c.console.print(f"labgpu portal on [bold]{tls.scheme}://{shown}:{bind_port}/[/] (Ctrl-C stops it)")
    print_tls(c, tls)
    https = tls.https and tls.certfile is not None and tls.keyfile is not None
    certfile = str(tls.certfile) if https else None
    keyfile = str(tls.keyfile) if https else None
    if not settings.apps_port:
        uvicorn.run(
            app,
            host=bind_host,
            port=bind_port,
            log_level="info",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            **portal_websocket_options(),
        )
        return
    from labgpu.web.routes.apps.origin import create_apps_app

    apps_app = create_apps_app(settings, app.state.services)
    c.console.print(f"members' web apps on [bold]{tls.scheme}://{shown}:{settings.apps_port}/[/]")
    _serve_both(
        uvicorn.Config(
            app,
            host=bind_host,
            port=bind_port,
            log_level="info",
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            **portal_websocket_options(),
        ),
        # No access log here: the enter URL carries a one-time ticket, and members' app paths are theirs.
        uvicorn.Config(
            apps_app,
            host=bind_host,
            port=settings.apps_port,
            log_level="info",
            ws=portal_websocket_options()["ws"],
            access_log=False,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        ),
    )


def portal_websocket_options() -> dict[str, Any]:
    """uvicorn's WebSocket options for the portal's origin (the terminal): the `websockets` package's Sans-I/O
    protocol where this uvicorn has it (its older protocol is deprecated in recent websockets releases), and
    no permessage-deflate, which browsers offer and uvicorn accepts by default: a terminal's messages are a
    keystroke and its echo, a few bytes that compression cannot shrink and that both ends would deflate and
    inflate on the way (ssh does not compress by default either)."""
    from uvicorn.config import WS_PROTOCOLS

    ws = "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"
    return {"ws": ws, "ws_per_message_deflate": False}


def _serve_both(portal: Any, apps: Any) -> None:
    """Run the portal and the apps origin in one process and one event loop; either ending ends both."""
    import asyncio

    import uvicorn

    servers = [uvicorn.Server(portal), uvicorn.Server(apps)]

    async def main() -> None:
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*pending, return_exceptions=True)

    # The loop uvicorn picks when it runs one server itself: uvloop where it is installed (the locks have it),
    # whose C event loop and transports take a fifth off the portal's CPU time per keystroke of a terminal.
    with asyncio.Runner(loop_factory=portal.get_loop_factory()) as runner:
        runner.run(main())


def print_tls(c: CliContext, tls: PortalTls) -> None:
    """The certificate the portal uses, and its fingerprint for members to compare."""
    if tls.source == "generated":
        made = "generated now" if tls.generated_now else "generated"
        c.console.print(
            f"TLS: self-signed certificate ({made}) {tls.certfile}\n"
            f"  SHA-256 fingerprint: [bold]{tls.fingerprint}[/]\n"
            "  Members' browsers warn once; they should accept it only when it shows this fingerprint "
            "(or set web_tls_cert and web_tls_key to a certificate the browsers trust).",
            highlight=False,
            soft_wrap=True,
            emoji=False,  # a fingerprint's ":AB:" is not an emoji
        )
    elif tls.source == "admin":
        c.console.print(
            f"TLS: {tls.certfile} (SHA-256 {tls.fingerprint})", highlight=False, soft_wrap=True, emoji=False
        )
    elif tls.source == "proxy":
        c.console.print("plain HTTP: a reverse proxy in front terminates TLS (web_tls = proxy)")
