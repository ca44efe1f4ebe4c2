"""`labgpu serve`: the portal and JSON API."""

from __future__ import annotations

from typing import Annotated

import typer

from labgpu.cli.context import get_context


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. Default: the web_host setting.")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on. Default: the web_port setting.")
    ] = None,
) -> None:
    """Run the web portal and JSON API (migrates the database first)."""
    import uvicorn

    from labgpu.store.migrate import upgrade
    from labgpu.web.app import create_app

    c = get_context(ctx)
    settings = c.settings
    result = upgrade(settings)
    if result.changed:
        c.console.print(f"database migrated to revision {result.after}")
    settings.session_secret()  # create the key now rather than on the first request
    app = create_app(settings)
    bind_host = host or settings.web_host
    bind_port = port or settings.web_port
    c.console.print(f"labgpu portal on [bold]http://{bind_host}:{bind_port}/[/] (Ctrl-C stops it)")
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="info")
