"""`labgpu template`: the images containers are created from."""

from __future__ import annotations

from typing import Annotated

import typer

from labgpu.cli.context import get_context, print_json

app = typer.Typer(help="Templates: the images containers are created from.", no_args_is_help=True)


@app.command("bootstrap")
def bootstrap(
    ctx: typer.Context,
    alias: Annotated[
        str | None, typer.Option(help="Alias to publish as. Default: the default_template setting.")
    ] = None,
    suite: Annotated[str, typer.Option(help="Debian suite to build.")] = "bookworm",
    mirror: Annotated[
        str, typer.Option(help="Debian mirror (a campus mirror works; no other internet access is needed).")
    ] = "http://deb.debian.org/debian",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build the minimal template (Debian + sshd) offline with debootstrap and publish it.

    Cached: running it again publishes nothing new unless the recipe changed."""
    from labgpu.services.templates import bootstrap_template

    c = get_context(ctx)
    name = alias or c.settings.default_template
    if as_json:
        result = bootstrap_template(c.runtime, alias=name, suite=suite, mirror=mirror)
    else:
        with c.console.status(f"building template {name} (about a minute the first time)") as status:
            result = bootstrap_template(
                c.runtime, alias=name, suite=suite, mirror=mirror, progress=lambda line: status.update(line)
            )
    if as_json:
        print_json(
            {
                "alias": result.alias,
                "fingerprint": result.fingerprint,
                "recipe": result.recipe_hash,
                "imported": result.imported,
                "built": result.built,
            }
        )
    elif result.imported:
        c.console.print(f"published template [bold]{result.alias}[/] ({result.fingerprint[:12]})")
    else:
        c.console.print(
            f"template [bold]{result.alias}[/] is up to date ({result.fingerprint[:12]}); nothing to do"
        )
