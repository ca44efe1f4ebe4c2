"""A template build's host-side package bundles (template keys ``pip`` and ``npm``): fetched on the host by
:mod:`labgpu.system.bundles` (cached), pushed into the builder as one tar, unpacked there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from labgpu.services.templates._build_report import TemplateBuildError
from labgpu.services.templates._step_types import HostBundle, Push, Run
from labgpu.system import bundles

WORK_DIR = "/run/labgpu-build"  # the builder's tmpfs (as _steps.WORK_DIR)


def run_bundle(
    action: HostBundle,
    step: str,
    where: str,
    cache_dir: Path,
    say: Callable[[str], None] | None,
    push: Callable[[Push], None],
    run: Callable[[Run], None],
) -> None:
    """Fetch ``action``'s packages on the host (cached), push the tar into the builder, unpack it at
    ``action.dest``. Raises TemplateBuildError naming ``where`` when the registry cannot be reached."""

    def progress(line: str) -> None:
        if say:
            say(line.rstrip("\n") + "\n")

    try:
        if action.kind == "pip":
            tar = bundles.pip_bundle(
                action.packages,
                python=action.version,
                cache_dir=cache_dir,
                index_url=action.index_url,
                progress=progress,
            )
        else:
            tar = bundles.npm_bundle(
                action.packages,
                node=action.version,
                cache_dir=cache_dir,
                registry=action.index_url,
                progress=progress,
            )
    except bundles.PackageFetchError as exc:
        raise TemplateBuildError(
            f"{where}: {exc.message}",
            step=step,
            hint="check that this host reaches the package registry (or set index_url / registry to a mirror)",
        ) from None
    inside = f"{WORK_DIR}/bundle-{action.kind}.tar"
    push(Push(inside, source=tar))
    run(Run(("tar", "-xf", inside, "-C", action.dest, "--no-same-owner")))
    run(Run(("rm", "-f", inside)))
