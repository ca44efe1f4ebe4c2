"""The templates feature on the command line: `labgpu template ...`, the images containers are created
from (build, validate, list, show, rm, export, import, bootstrap). Mounted in :mod:`labgpu.cli.main`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text

from labgpu.cli.context import CliContext, get_context, print_json
from labgpu.cli.options import JsonOpt

if TYPE_CHECKING:
    from labgpu.services.templates import BuildReporter, LoadedSpec

app = typer.Typer(help="Templates: the images containers are created from.", no_args_is_help=True)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{size}B"


def short_date(stamp: str) -> str:
    """2026-11-22T12:16:47.1234Z -> 2026-11-22 12:16."""
    return stamp.replace("T", " ")[:16] if stamp else "-"


def _reporter(console: Console, progress: Progress, verbose: bool) -> BuildReporter:
    from labgpu.services.templates import BuildReporter

    class RichReporter(BuildReporter):
        """Step N/M with a bar; finished steps stay on screen; --verbose prints step output above."""

        def __init__(self) -> None:
            self.verbose = verbose
            self.task = progress.add_task("", total=1, step="")

        def start(self, name: str, total: int) -> None:
            progress.update(self.task, total=total, description=f"building {name}")

        def step(self, index: int, total: int, name: str, title: str) -> None:
            progress.update(self.task, completed=index - 1, step=f"{index}/{total} {name}", description=title)

        def step_done(self, index: int, total: int, name: str, seconds: float) -> None:
            progress.update(self.task, completed=index)
            line = Text.assemble(("✓ ", "green"), f"{index}/{total} {name}", (f"  {seconds:.1f}s", "dim"))
            progress.console.print(line)

        def output(self, text: str) -> None:
            progress.console.print(Text(text.rstrip("\n"), style="dim"), soft_wrap=True)

        def note(self, message: str) -> None:
            progress.console.print(f"[yellow]note:[/] {escape(message)}", soft_wrap=True)

    return RichReporter()


@app.command("build")
def build(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="The template spec (YAML), e.g. templates/minimal.yaml.")],
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show each step's output as it runs.")
    ] = False,
    keep_builder: Annotated[
        bool,
        typer.Option("--keep-builder", help="Keep the builder container (to look inside after a failure)."),
    ] = False,
    network: Annotated[
        str | None,
        typer.Option(
            help="Network for the builder's NIC (apt needs one); 'none' for no NIC. "
            "Default: network_name when network_mode is bridge or macvlan."
        ),
    ] = None,
    step_timeout: Annotated[float, typer.Option(help="Seconds one step may take.", min=10)] = 3600.0,
    as_json: JsonOpt = False,
) -> None:
    """Build a template from a spec in a temporary builder container and publish it as NAME and
    NAME/VERSION (a new version each time). The spec is checked first: nothing is built from a bad one."""
    from labgpu.services.templates import TemplateBuildError

    loaded = _load(spec)
    c = get_context(ctx)
    try:
        _build(
            c,
            loaded,
            verbose=verbose,
            keep_builder=keep_builder,
            network=network,
            step_timeout=step_timeout,
            as_json=as_json,
        )
    except TemplateBuildError as exc:
        if exc.output_tail:
            err = Console(stderr=True, highlight=False)
            err.print(
                Text(f"--- last output of step '{exc.step}' ---\n{exc.output_tail}\n---", style="dim"),
                soft_wrap=True,
            )
        raise


def _load(spec: Path) -> LoadedSpec:
    """The spec, or every problem in it on stderr (the error line that follows names the first)."""
    from labgpu.services.templates import SpecError, load_spec

    try:
        return load_spec(spec)
    except SpecError as exc:
        if len(exc.lines) > 1:
            Console(stderr=True, highlight=False).print("\n".join(exc.lines), markup=False, soft_wrap=True)
        raise


def _build(
    c: CliContext,
    loaded: LoadedSpec,
    *,
    verbose: bool,
    keep_builder: bool,
    network: str | None,
    step_timeout: float,
    as_json: bool,
) -> None:
    from labgpu.services.templates import BuildReporter, build_template

    svc = c.services
    if as_json:
        result = build_template(
            svc,
            loaded,
            reporter=BuildReporter(),
            keep_builder=keep_builder,
            network=network,
            step_timeout=step_timeout,
        )
        print_json(result.as_dict())
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[step]}"),
        TextColumn("{task.description}", markup=False),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=c.console,
    )
    with progress:
        result = build_template(
            svc,
            loaded,
            reporter=_reporter(c.console, progress, verbose),
            keep_builder=keep_builder,
            network=network,
            step_timeout=step_timeout,
        )
    c.console.print(
        f"published template [bold]{escape(result.name)}[/] version [bold]{escape(result.version)}[/] "
        f"({result.fingerprint[:12]}, {human_size(result.size)}) in {result.seconds:.0f}s; "
        f"new containers use it as [bold]{escape(result.name)}[/]"
    )


@app.command("validate")
def validate(
    ctx: typer.Context,
    spec: Annotated[Path, typer.Argument(help="The template spec (YAML).")],
    as_json: JsonOpt = False,
) -> None:
    """Check a spec and show the steps a build would run, without building anything."""
    from labgpu.services.templates import guess_os_release, plan_steps

    loaded = _load(spec)
    steps = plan_steps(loaded, os_release=guess_os_release(loaded.spec), network=False)
    if as_json:
        print_json(
            {
                "name": loaded.spec.name,
                "spec_hash": loaded.spec_hash(),
                "steps": [
                    {
                        "name": s.name,
                        "title": s.title,
                        "needs_network": s.needs_network,
                        "actions": [a.describe() for a in s.actions],
                    }
                    for s in steps
                ],
            }
        )
        return
    console = get_context(ctx).console
    console.print(f"[green]ok:[/] {escape(str(spec))} describes template [bold]{escape(loaded.spec.name)}[/]")
    for number, step in enumerate(steps, 1):
        net = " [dim](needs a network)[/]" if step.needs_network else ""
        console.print(f"  {number}. [bold]{escape(step.name)}[/]: {escape(step.title)}{net}", soft_wrap=True)
        for action in step.actions:
            console.print(Text(f"       {action.describe()}", style="dim"), soft_wrap=True)


@app.command("list")
def list_templates(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Templates with their versions, size, build date and how many containers use each."""
    from labgpu.services.templates import catalog

    c = get_context(ctx)
    cat = catalog(c.runtime)
    if as_json:
        print_json({"templates": [t.as_dict() for t in cat.templates], "builders": list(cat.builders)})
        return
    table = Table(
        Column("template", no_wrap=True),
        Column("version", no_wrap=True),
        Column("size", justify="right", no_wrap=True),
        Column("built (UTC)", no_wrap=True),
        Column("containers", justify="right", no_wrap=True),
        caption="* the newest version, what NAME means",
    )
    for template in cat.templates:
        for v in template.versions:
            table.add_row(
                template.name,
                (v.version or "-") + (" *" if v.latest else ""),
                human_size(v.size),
                short_date(v.built_at),
                str(len(v.containers)),
            )
    if cat.templates:
        c.console.print(table)
    else:
        c.console.print("no templates yet: build one with `labgpu template build templates/minimal.yaml`")
    if cat.builders:
        c.console.print(
            f"[yellow]note:[/] builder containers: {escape(', '.join(cat.builders))} (a build in progress, or "
            "left by --keep-builder or an interrupted build: delete those with lxc/incus delete --force)",
            soft_wrap=True,
        )


@app.command("show")
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="NAME[/VERSION]", help="A template, or one of its versions.")],
    as_json: JsonOpt = False,
) -> None:
    """One template (all its versions) or one version, with the containers using it."""
    from labgpu.services.templates import catalog

    c = get_context(ctx)
    template, version = catalog(c.runtime).find(ref)
    if as_json:
        print_json(version.as_dict() if version else template.as_dict())
        return
    versions = [version] if version else list(template.versions)
    for v in versions:
        table = Table(
            show_header=False, title=v.ref + ("  (latest)" if v.latest else ""), title_justify="left"
        )
        for key, value in (
            ("fingerprint", v.fingerprint),
            ("aliases", ", ".join(v.aliases) or "-"),
            ("description", v.description or "-"),
            ("size", human_size(v.size)),
            ("built (UTC)", short_date(v.built_at)),
            ("spec hash", v.spec_hash or "-"),
            ("containers", ", ".join(v.containers) or "none"),
        ):
            table.add_row(key, Text(value))
        c.console.print(table)
    if not version:
        c.console.print(
            f"containers using {escape(template.name)}: {escape(', '.join(template.containers) or 'none')}"
        )


@app.command("rm")
def remove(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="NAME[/VERSION]", help="A template (every version) or one version.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Remove it even while containers use it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a template or one version. Refused while containers use it, unless --force."""
    from labgpu.services.templates import remove_template

    c = get_context(ctx)
    result = remove_template(c.services, ref, force=force)
    if as_json:
        print_json(result.as_dict())
        return
    c.console.print(f"removed {escape(', '.join(result.removed))}")
    if result.latest_now:
        name = ref.split("/", 1)[0]
        c.console.print(f"{escape(name)} now means version {escape(result.latest_now)}")


@app.command("export")
def export(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="NAME[/VERSION]", help="A template (its newest version) or a version.")
    ],
    file: Annotated[Path, typer.Argument(help="The tarball to write.")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a template to a tarball, to import it on another host with `labgpu template import`."""
    from labgpu.services.templates import export_template

    c = get_context(ctx)
    with c.console.status(f"exporting {ref}"):
        files = export_template(c.runtime, ref, file, overwrite=force)
    if as_json:
        print_json({"files": [str(f) for f in files]})
        return
    for f in files:
        c.console.print(f"wrote {escape(str(f))} ({human_size(f.stat().st_size)})")


@app.command("import")
def import_(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(help="An exported tarball (or a split image: metadata tarball and root filesystem)."),
    ],
    name: Annotated[str | None, typer.Option(help="Import under this template name.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a template exported with `labgpu template export`, keeping its name and version."""
    from labgpu.services.templates import import_template

    c = get_context(ctx)
    with c.console.status("importing"):
        result = import_template(c.services, files, name=name)
    if as_json:
        print_json(result.as_dict())
        return
    what = "was already there" if result.already_there else "imported"
    latest = f"; {result.name} now means this version" if result.latest else ""
    c.console.print(f"template [bold]{escape(result.name)}/{escape(result.version)}[/] {what}{latest}")


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
