"""`labgpu setup`: a fresh host to a running labgpu from an installed package (the ops feature's use case
:func:`labgpu.services.ops.setup`; kept apart from cli/ops.py, which is long enough). Mounted in
:mod:`labgpu.cli.main`; scripts/quickstart runs it from a checkout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from labgpu.cli.context import CliContext, get_context, print_json

STYLE = {"done": "green", "unchanged": "dim", "skipped": "yellow"}


def setup(
    ctx: typer.Context,
    packages: Annotated[
        bool,
        typer.Option("--packages/--no-packages", help="Install the missing system packages with apt-get."),
    ] = True,
    template: Annotated[
        bool,
        typer.Option(
            "--template/--no-template",
            help="Build the minimal template offline (debootstrap; about a minute the first time).",
        ),
    ] = True,
    services: Annotated[
        bool,
        typer.Option(
            "--services/--no-services",
            help="Where systemd runs: write, enable and start the units for boot, the portal and the agent.",
        ),
    ] = True,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="Without systemd: run the portal in the foreground at the end (--no-serve returns instead).",
        ),
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (implies --no-serve).")
    ] = False,
    subuid_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    subgid_file: Annotated[Path | None, typer.Option(hidden=True)] = None,
    sysctl_root: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Set this host up and start labgpu, from an installed package: system packages, the LXD/Incus daemon,
    the database, host init (restarting the daemon when it must), the minimal template, the portal's TLS
    certificate, and the systemd units for boot, the portal (with the jobs) and the GPU agent where systemd
    runs; without systemd the portal then runs in the foreground.

    Safe to run again: every step keeps what is already there. Run it as root."""
    from labgpu.services.hosts import HostPaths
    from labgpu.services.ops import SetupStep
    from labgpu.services.ops import setup as run_setup

    c = get_context(ctx)
    out = c.console

    def on_step(step: SetupStep) -> None:
        if as_json:
            return
        style = STYLE.get(step.status, "")
        out.print(
            f"  [{style}]{step.status:<9}[/] {step.name:<9} {escape(step.detail)}",
            highlight=False,
            soft_wrap=True,
        )
        for line in step.lines:
            out.print(f"            {escape(line)}", highlight=False, soft_wrap=True)

    paths = HostPaths(subuid_file=subuid_file, subgid_file=subgid_file, sysctl_root=sysctl_root)
    if not as_json:
        out.print("labgpu setup: packages, daemon, database, host, template, TLS, services")
    quiet = Console(quiet=True)
    with (quiet if as_json else out).status("setting up") as status:
        report = run_setup(
            c.settings,
            config_path=c.config_path,
            install_packages=packages,
            template=template,
            units=services,
            paths=paths,
            on_step=on_step,
            progress=lambda line: status.update(escape(line)),
        )
    if as_json:
        print_json(report.as_dict())
        return
    _print_next(c, report.systemd and services)
    if serve and not (report.systemd and services):
        from labgpu.cli.portal import run_portal

        out.print(
            "Without systemd the portal runs here, in the foreground (Ctrl-C stops it; run setup again)."
        )
        run_portal(c)


def _print_next(c: CliContext, units: bool) -> None:
    """Where the portal is and what the admin does next (there are no default accounts)."""
    from labgpu.services import portal
    from labgpu.system.tls import portal_tls

    settings = c.settings
    tls = portal_tls(settings, settings.web_host, create=False)
    host = settings.web_host
    if host in ("0.0.0.0", "::"):  # noqa: S104 - names the wildcard, binds nothing
        import socket

        host = socket.getfqdn() or socket.gethostname()
    url = f"{tls.scheme}://{host}:{settings.web_port}"
    out = c.console
    out.print(f"\n  The portal: [bold]{url}/[/]" + (" (systemd: labgpu-serve.service)" if units else ""))
    if tls.source == "generated":
        out.print(f"  Its certificate's SHA-256 fingerprint: {tls.fingerprint}", highlight=False, emoji=False)
    if not portal.list_accounts(c.store_services, admins_only=True):
        out.print("  There is no admin yet (labgpu has no default accounts). As root:")
        out.print("      labgpu admin create NAME --email YOU@EXAMPLE.EDU     # asks for the password")
        out.print(f"  then log in at {url}/login. Members apply for an account at {url}/apply.")
    else:
        out.print(f"  Log in as an admin at {url}/login (another admin: labgpu admin create NAME).")
    if tls.scheme == "http":
        out.print(
            '  It listens on loopback only: for members, set web_host = "0.0.0.0" in /etc/labgpu/labgpu.toml '
            "(HTTPS with a generated certificate, or web_tls_cert/web_tls_key) and run setup again.",
            soft_wrap=True,
        )
    out.print("  Check the host at any time: labgpu doctor\n")
