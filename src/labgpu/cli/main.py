"""The `labgpu` command: a thin layer over services.

Expected errors (LabgpuError) are printed as one line in :func:`main` and
turn into exit code 2 (bad input) or 1 (failure); never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from labgpu import __version__
from labgpu.cli.context import CliContext
from labgpu.errors import LabgpuError

app = typer.Typer(
    name="labgpu",
    help="Self-service GPU containers for research labs, on LXD or Incus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"labgpu {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Settings file (TOML). Default: $LABGPU_CONFIG or /etc/labgpu/labgpu.toml."
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = CliContext(config_path=config)
    ctx.call_on_close(ctx.obj.close)


def _register() -> None:
    """The whole command tree, in one place: each feature's commands come from the cli module named like
    the feature in services/ (members, hosts, gpus, templates, portal, ops). The order here is the order
    `labgpu --help` lists them in (commands first, then groups)."""
    from labgpu.cli import apps, gpus, hosts, members, notify, ops, portal, setup, templates

    app.command("setup")(setup.setup)
    app.command("doctor")(hosts.doctor)
    app.command("serve")(portal.serve)
    app.command("agent")(gpus.agent)
    app.command("reconcile")(ops.reconcile)
    app.command("boot")(ops.boot)

    app.add_typer(hosts.app, name="host")
    hosts.app.add_typer(hosts.gateway_app, name="gateway")
    app.add_typer(members.app, name="member")
    members.app.add_typer(members.key_app, name="key")
    members.app.add_typer(members.template_app, name="template")
    app.add_typer(members.share_app, name="share")
    app.add_typer(ops.db_app, name="db")
    app.add_typer(templates.app, name="template")
    app.add_typer(ops.config_app, name="config")
    app.add_typer(gpus.app, name="gpu")
    app.add_typer(portal.admin_app, name="admin")
    app.add_typer(ops.jobs_app, name="jobs")
    app.add_typer(hosts.container_app, name="container")
    app.add_typer(portal.notice_app, name="notice")
    app.add_typer(ops.backup_app, name="backup")
    app.add_typer(notify.app, name="notify")
    app.add_typer(portal.auth_app, name="auth")
    app.add_typer(apps.app, name="app")


_register()


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (used by main() and by tests)."""
    err = Console(stderr=True, highlight=False)
    try:
        app(args=argv, prog_name="labgpu", standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except LabgpuError as exc:
        # One line, what went wrong and what to do about it, so it survives `| tail -1` and log greps.
        line = f"[bold red]error:[/] {escape(exc.message)}"
        if exc.hint:
            line += f" [dim](fix: {escape(exc.hint)})[/]"
        err.print(line, soft_wrap=True)
        return 2 if exc.is_bad_input else 1
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    return 0


def main() -> None:
    sys.exit(run())
