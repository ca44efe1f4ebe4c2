"""`labgpu member key`: a member's SSH public keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt
from labgpu.errors import BadInput

key_app = typer.Typer(help="A member's SSH public keys.", no_args_is_help=True)


def read_key_files(paths: list[Path]) -> list[str]:
    """The text of each public key file; BadInput for one that cannot be read or is not text."""
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text())
        except OSError as exc:
            raise BadInput(f"cannot read key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise BadInput(f"key file {path} is not text") from None
    return texts


@key_app.command("add")
def key_add(
    ctx: typer.Context, name: str, files: Annotated[list[Path], typer.Argument(help="Public key files.")]
) -> None:
    """Add SSH public keys to a member's container."""
    from labgpu.services.members import add_keys

    c = get_context(ctx)
    added = add_keys(c.services, name, read_key_files(files))
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
