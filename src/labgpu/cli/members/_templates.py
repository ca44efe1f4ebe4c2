"""`labgpu member template`: members' own templates (a member's container saved from a snapshot, to reset
to with `labgpu member reset NAME --template member/NAME/LABEL`)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from labgpu.cli.context import get_context, print_json
from labgpu.cli.options import JsonOpt, YesOpt, confirm
from labgpu.domain.members import format_size

template_app = typer.Typer(
    help="Members' own templates: a container saved from a snapshot, to reset to.", no_args_is_help=True
)


@template_app.command("save")
def template_save(
    ctx: typer.Context,
    name: str,
    snap: Annotated[
        str | None,
        typer.Argument(metavar="[SNAPSHOT]", help="The snapshot to publish. Default: one taken now."),
    ] = None,
    label: Annotated[str, typer.Option(help="The template's label: member/NAME/LABEL is its alias.")] = "",
    description: Annotated[str, typer.Option(help="One line saying what is in it.")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Save a member's container as their own template (its root filesystem; NOT the home folder).

    Published on the container's host from SNAPSHOT (or a snapshot taken now); only that member's container
    is ever made from it. Counts against member_template_quota and member_template_quota_gib."""
    from labgpu.errors import BadInput
    from labgpu.services.members import save_my_template

    if not label:
        raise BadInput("give the template a label with --label")
    c = get_context(ctx)
    if as_json:
        print_json(
            save_my_template(c.services, name, label, snapshot=snap, description=description).as_dict()
        )
        return
    with c.console.status(f"publishing {name}'s container as a template (minutes for a large one)"):
        saved = save_my_template(c.services, name, label, snapshot=snap, description=description)
    c.console.print(
        f"saved [bold]{saved.alias}[/] ({format_size(saved.size_bytes)}) from snapshot {saved.snapshot}; "
        f"reset to it with `labgpu member reset {name} --template {saved.alias}`"
    )


@template_app.command("list")
def template_list(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this member's. Default: every member's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List members' own templates."""
    from labgpu.services.members import list_my_templates

    c = get_context(ctx)
    rows = list_my_templates(c.services, name)
    if as_json:
        print_json([t.as_dict() for t in rows])
        return
    if not rows:
        c.console.print("no member has saved a template" if name is None else f"{name} has no templates")
        return
    table = Table("template", "size", "saved (UTC)", "from snapshot", "host", "in use", "description")
    for t in rows:
        table.add_row(
            t.alias,
            format_size(t.size_bytes),
            t.created_at.strftime("%Y-%m-%d %H:%M"),
            t.snapshot,
            t.host or "-",
            "yes" if t.in_use else "",
            t.description,
        )
    c.console.print(table)


@template_app.command("rm")
def template_rm(
    ctx: typer.Context,
    name: str,
    label: Annotated[str, typer.Argument(help="The template's label.")],
    yes: YesOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete one of a member's own templates (its image). A container made from it keeps running."""
    from labgpu.services.members import get_my_template, remove_my_template

    c = get_context(ctx)
    alias = get_my_template(c.services, name, label).alias
    confirm(f"Delete {name}'s template {alias}?", yes=yes)
    removal = remove_my_template(c.services, name, label)
    if as_json:
        print_json(removal.as_dict())
        return
    c.console.print(f"deleted {alias}")
    if removal.template_now:
        c.console.print(f"{name}'s container was made from it: a reset now uses {removal.template_now}")
