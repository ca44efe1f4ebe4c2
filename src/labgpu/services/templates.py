"""Templates: images that containers are created from.

For now one use case: publish the built-in minimal template (Debian with sshd,
built offline with debootstrap by :mod:`labgpu.services.base_image`) under an
alias. Declarative template specs build on this later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from labgpu.runtime.client import RuntimeClient
from labgpu.services import base_image


@dataclass(frozen=True)
class BootstrapResult:
    alias: str
    fingerprint: str
    recipe_hash: str
    imported: bool  # False: the same build was already published under the alias
    built: bool  # False: the build came from the cache


def bootstrap_template(
    runtime: RuntimeClient,
    *,
    alias: str,
    suite: str = base_image.DEFAULT_SUITE,
    mirror: str = base_image.DEFAULT_MIRROR,
    cache_dir: Path | None = None,
    progress: base_image.Progress | None = None,
) -> BootstrapResult:
    """Build (or take from the cache) the minimal Debian image and publish it as ``alias``.

    Idempotent: when the alias already points at an image of the same recipe,
    nothing is imported. Waits for the build (about a minute when not cached)
    and the import. Raises ImageBuildError, BadInput or runtime errors."""
    recipe = base_image.debootstrap_recipe(suite=suite, mirror=mirror)
    built = base_image.build_image(recipe, cache_dir=cache_dir, progress=progress)
    current = runtime.images.get_by_alias(alias)
    if current is not None and current.properties.get("labgpu.recipe") == built.recipe_hash:
        return BootstrapResult(
            alias, current.fingerprint, built.recipe_hash, imported=False, built=not built.cached
        )
    if progress:
        progress(f"importing the image as {alias}")
    fingerprint = runtime.images.import_tarballs(
        built.meta,
        built.rootfs,
        aliases=[alias],
        properties={"labgpu.recipe": built.recipe_hash, "labgpu.template": alias},
    )
    return BootstrapResult(alias, fingerprint, built.recipe_hash, imported=True, built=not built.cached)
