"""Templates: images that containers are created from.

A template is a published image with the property ``labgpu.template=NAME``, reached by the alias
``NAME`` (its newest version, what members' containers are created from) and ``NAME/VERSION`` (each
version; versions are ``YYYYMMDD-N``, increasing). Built from a spec by
:mod:`labgpu.services.templates._build`; this module lists, shows, removes, exports and imports them,
and keeps ``bootstrap_template`` (the built-in minimal template, used by scripts/quickstart).

Which containers use a template is read from ONE instances listing: a container was made from the
image its ``volatile.base_image`` names, and labgpu labels it ``user.labgpu.template``.
"""

from __future__ import annotations

import contextlib
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from labgpu.errors import BadInput, Conflict, NotFound
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.runtime.images import Image, file_fingerprint, split_image_fingerprint
from labgpu.runtime.instances import Instance
from labgpu.system import base_image

if TYPE_CHECKING:
    from labgpu.services.context import Services

PROP_TEMPLATE = "labgpu.template"
PROP_VERSION = "labgpu.version"
PROP_SPEC_HASH = "labgpu.spec-hash"
PROP_BUILT_AT = "labgpu.built-at"
TEMPLATE_LABEL = "user.labgpu.template"
BUILDER_LABEL = "user.labgpu.builder"
VERSION_RE = re.compile(r"^(\d{8})-(\d{1,6})$")


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


# Versions ------------------------------------------------------------------------------------------


def version_key(version: str | None) -> tuple[str, int]:
    """Sort key of a version: ``YYYYMMDD-N`` by date then N; anything else sorts first."""
    match = VERSION_RE.match(version or "")
    return (match.group(1), int(match.group(2))) if match else ("", 0)


def next_version(existing: Iterable[str], today: date) -> str:
    """The version after ``existing``: ``YYYYMMDD-N`` for today (or the newest date already used, if
    the clock went back), N one more than the highest of that day."""
    day = today.strftime("%Y%m%d")
    keys = [version_key(v) for v in existing if VERSION_RE.match(v)]
    day = max([day, *(k[0] for k in keys)])
    n = max((k[1] for k in keys if k[0] == day), default=0) + 1
    return f"{day}-{n}"


def template_versions(images: Iterable[Image], name: str) -> list[str]:
    """Every version of template ``name`` among ``images`` (from their aliases and properties)."""
    found: set[str] = set()
    for image in images:
        if image.properties.get(PROP_TEMPLATE) == name and image.properties.get(PROP_VERSION):
            found.add(image.properties[PROP_VERSION])
        found.update(a.split("/", 1)[1] for a in image.aliases if a.startswith(f"{name}/"))
    return sorted(found, key=version_key)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME/VERSION`` -> (name, version or None). Raises BadInput."""
    name, _, version = ref.partition("/")
    if not re.match(r"^[a-z0-9][a-z0-9._-]{0,62}\Z", name) or (
        version and not re.match(r"^[A-Za-z0-9._-]{1,40}\Z", version)
    ):
        raise BadInput(f"invalid template {ref!r}: expected NAME or NAME/VERSION")
    return name, version or None


# The catalog ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateVersion:
    name: str
    version: str | None
    fingerprint: str
    aliases: tuple[str, ...]
    size: int
    created_at: str
    built_at: str
    spec_hash: str
    description: str
    latest: bool
    containers: tuple[str, ...]

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}" if self.version else self.name

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "fingerprint": self.fingerprint,
            "aliases": list(self.aliases),
            "size": self.size,
            "created_at": self.created_at,
            "built_at": self.built_at,
            "spec_hash": self.spec_hash,
            "description": self.description,
            "latest": self.latest,
            "containers": list(self.containers),
        }


@dataclass(frozen=True)
class Template:
    name: str
    versions: tuple[TemplateVersion, ...]  # newest first
    containers: tuple[str, ...]  # using any version

    @property
    def latest(self) -> TemplateVersion | None:
        return next((v for v in self.versions if v.latest), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "latest": self.latest.version if self.latest else None,
            "containers": list(self.containers),
            "versions": [v.as_dict() for v in self.versions],
        }


@dataclass(frozen=True)
class Catalog:
    templates: tuple[Template, ...]
    builders: tuple[str, ...] = field(default=())  # builder containers left behind (kept or crashed)

    def find(self, ref: str) -> tuple[Template, TemplateVersion | None]:
        """The template of ``NAME`` (version None) or ``NAME/VERSION``. Raises NotFound."""
        name, version = parse_ref(ref)
        template = next((t for t in self.templates if t.name == name), None)
        if template is None:
            known = ", ".join(t.name for t in self.templates) or "none yet"
            raise NotFound(f"no template {name!r} (templates: {known})")
        if version is None:
            return template, None
        found = next((v for v in template.versions if v.version == version), None)
        if found is None:
            versions = ", ".join(v.version or "-" for v in template.versions)
            raise NotFound(f"template {name} has no version {version!r} (versions: {versions})")
        return template, found


def _uses(instance: Instance, image: Image, *, alias_target: dict[str, str]) -> bool:
    base = instance.config.get("volatile.base_image")
    if base:
        return base == image.fingerprint
    label = instance.config.get(TEMPLATE_LABEL)
    return bool(label) and alias_target.get(label or "") == image.fingerprint


def catalog(runtime: RuntimeClient) -> Catalog:
    """Every template with its versions and the containers using each, from ONE images listing and
    ONE instances listing. Does not wait on anything."""
    images = runtime.images.all()
    instances = runtime.instances.all(with_state=False)
    alias_target = {alias: image.fingerprint for image in images for alias in image.aliases}
    by_name: dict[str, list[Image]] = {}
    for image in images:
        name = image.properties.get(PROP_TEMPLATE)
        if name:
            by_name.setdefault(name, []).append(image)
    templates = []
    for name, members in sorted(by_name.items()):
        versions = []
        for image in members:
            version = image.properties.get(PROP_VERSION) or next(
                (a.split("/", 1)[1] for a in image.aliases if a.startswith(f"{name}/")), None
            )
            users = tuple(sorted(i.name for i in instances if _uses(i, image, alias_target=alias_target)))
            versions.append(
                TemplateVersion(
                    name=name,
                    version=version,
                    fingerprint=image.fingerprint,
                    aliases=tuple(sorted(image.aliases)),
                    size=image.size,
                    created_at=image.created_at,
                    built_at=image.properties.get(PROP_BUILT_AT, image.created_at),
                    spec_hash=image.properties.get(PROP_SPEC_HASH, ""),
                    description=image.properties.get("description", ""),
                    latest=alias_target.get(name) == image.fingerprint,
                    containers=users,
                )
            )
        versions.sort(key=lambda v: (version_key(v.version), v.created_at), reverse=True)
        users_all = {c for v in versions for c in v.containers}
        labelled = {
            i.name for i in instances if (i.config.get(TEMPLATE_LABEL) or "").split("/", 1)[0] == name
        }
        templates.append(
            Template(name=name, versions=tuple(versions), containers=tuple(sorted(users_all | labelled)))
        )
    builders = tuple(sorted(i.name for i in instances if i.config.get(BUILDER_LABEL) == "true"))
    return Catalog(templates=tuple(templates), builders=builders)


# Removing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Removal:
    removed: tuple[str, ...]  # refs
    latest_now: str | None  # where NAME points afterwards (None: the template is gone)
    containers: tuple[str, ...]  # containers that used what was removed (only with force)

    def as_dict(self) -> dict[str, Any]:
        return {"removed": list(self.removed), "latest": self.latest_now, "containers": list(self.containers)}


def remove_template(svc: Services, ref: str, *, force: bool = False) -> Removal:
    """Delete a template (every version) or one version. Refused (Conflict) while containers use it,
    unless ``force``; removing the newest version points ``NAME`` at the next newest. Raises NotFound.
    Waits for the deletions; records the removal in the audit log."""
    runtime = svc.runtime
    template, version = catalog(runtime).find(ref)
    doomed = [version] if version is not None else list(template.versions)
    users = template.containers if version is None else version.containers
    if users and not force:
        shown = ", ".join(users[:10]) + (" ..." if len(users) > 10 else "")
        raise Conflict(
            f"template {ref} is used by {len(users)} container{'s' if len(users) != 1 else ''}: {shown}",
            hint="they keep running without it, but `member reset` needs a template: move them first, "
            "or remove it anyway with --force",
        )
    keep = [v for v in template.versions if v not in doomed]
    latest_now = template.latest.version if template.latest and template.latest not in doomed else None
    if version is not None and version.latest and keep:
        runtime.images.set_alias(template.name, keep[0].fingerprint)
        latest_now = keep[0].version
    for item in doomed:
        with contextlib.suppress(RuntimeNotFound):
            runtime.images.delete(item.fingerprint)
    with svc.session() as session:
        svc.audit(
            session,
            "template.rm",
            ref,
            versions=[v.ref for v in doomed],
            fingerprints=[v.fingerprint for v in doomed],
            forced_over=list(users),
        )
    return Removal(
        removed=tuple(v.ref for v in doomed), latest_now=latest_now if keep else None, containers=tuple(users)
    )


# Export and import ---------------------------------------------------------------------------------


def export_template(runtime: RuntimeClient, ref: str, dest: Path, *, overwrite: bool = False) -> list[Path]:
    """Write a template version (``NAME`` = its newest) to ``dest``: one tarball for a published
    template; for a split image (``template bootstrap``) the metadata to ``dest`` and the root
    filesystem to ``dest.rootfs``. Raises NotFound, BadInput when a file exists. Waits."""
    template, version = catalog(runtime).find(ref)
    chosen = version or template.latest or (template.versions[0] if template.versions else None)
    if chosen is None:
        raise NotFound(f"template {ref} has no image")
    rootfs = dest.with_name(dest.name + ".rootfs")
    for path in (dest, rootfs):
        if path.exists() and not overwrite:
            raise BadInput(f"{path} exists", hint="choose another file name, or give --force to overwrite it")
    if not dest.parent.is_dir():
        raise BadInput(f"folder {dest.parent} does not exist")
    return runtime.images.export_to(chosen.fingerprint, dest, rootfs_dest=rootfs)


def _read_metadata(tarball: Path) -> dict[str, Any]:
    """metadata.yaml of an image tarball (unified, or a split image's metadata part). Raises BadInput."""
    try:
        with tarfile.open(tarball, "r|*") as tar:
            for member in tar:
                if member.name.lstrip("./") == "metadata.yaml" and member.isfile():
                    f = tar.extractfile(member)
                    data = yaml.safe_load(f.read()) if f is not None else None
                    if not isinstance(data, dict):
                        break
                    return data
    except (tarfile.TarError, OSError, yaml.YAMLError) as exc:
        raise BadInput(f"{tarball} is not an image tarball: {exc}") from None
    raise BadInput(f"{tarball} is not an image tarball: it has no metadata.yaml")


@dataclass(frozen=True)
class Imported:
    name: str
    version: str
    fingerprint: str
    latest: bool
    already_there: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "ref": f"{self.name}/{self.version}",
            "fingerprint": self.fingerprint,
            "latest": self.latest,
            "already_there": self.already_there,
        }


def import_template(svc: Services, files: Sequence[Path], *, name: str | None = None) -> Imported:
    """Import a template exported by :func:`export_template` (or any image tarball): one unified
    tarball, or a split image's metadata and root filesystem (given both, or ``FILE`` with
    ``FILE.rootfs`` beside it). It keeps its name and version (``name`` renames it; an image without
    them gets a new version). ``NAME`` moves to it when it is the newest version. Raises BadInput,
    Conflict when NAME/VERSION is another image. Waits for the upload; records it in the audit log."""
    runtime = svc.runtime
    paths = [Path(f) for f in files]
    if len(paths) == 1 and paths[0].with_name(paths[0].name + ".rootfs").is_file():
        paths.append(paths[0].with_name(paths[0].name + ".rootfs"))
    if not 1 <= len(paths) <= 2:
        raise BadInput("give one image tarball, or a metadata tarball and a root filesystem")
    for path in paths:
        if not path.is_file():
            raise BadInput(f"{path} does not exist")
    properties = {str(k): str(v) for k, v in (_read_metadata(paths[0]).get("properties") or {}).items()}
    template = name or properties.get(PROP_TEMPLATE)
    if not template:
        raise BadInput(
            f"{paths[0]} is not a labgpu template (no {PROP_TEMPLATE} property)",
            hint="give it a name with --name",
        )
    parse_ref(template)
    fingerprint = (
        file_fingerprint(paths[0]) if len(paths) == 1 else split_image_fingerprint(paths[0], paths[1])
    )
    images = runtime.images.all()
    existing = next((i for i in images if i.fingerprint == fingerprint), None)
    version = properties.get(PROP_VERSION) if properties.get(PROP_TEMPLATE) == template else None
    if not version or not VERSION_RE.match(version):
        version = next_version(template_versions(images, template), date.today())
    ref = f"{template}/{version}"
    target = next((i.fingerprint for i in images if ref in i.aliases), None)
    if target is not None and target != fingerprint:
        raise Conflict(
            f"template {ref} exists and is a different image ({target[:12]})",
            hint="remove it first with `labgpu template rm`, or import under another name with --name",
        )
    props = {PROP_TEMPLATE: template, PROP_VERSION: version}
    if len(paths) == 1:
        runtime.images.import_unified(paths[0], properties=props, timeout=svc.settings.operation_timeout * 4)
    else:
        runtime.images.import_tarballs(
            paths[0], paths[1], properties=props, timeout=svc.settings.operation_timeout * 4
        )
    if target is None:
        runtime.images.create_alias(ref, fingerprint)
    current = runtime.images.resolve_alias(template)
    current_version = None
    if current is not None:
        image = runtime.images.find(current)
        current_version = image.properties.get(PROP_VERSION) if image else None
    latest = current is None or current == fingerprint or version_key(version) > version_key(current_version)
    if latest:
        runtime.images.set_alias(template, fingerprint)
    with svc.session() as session:
        svc.audit(session, "template.import", ref, fingerprint=fingerprint, files=[str(p) for p in paths])
    return Imported(
        name=template,
        version=version,
        fingerprint=fingerprint,
        latest=latest,
        already_there=existing is not None,
    )
