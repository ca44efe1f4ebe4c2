"""Small real images built offline, for development and tests.

Two recipes, each giving an LXD/Incus "split" image (``meta.tar.gz`` + ``rootfs.tar.gz``) that both
daemons import:

- ``debootstrap``: Debian minbase from a package mirror, with systemd, sshd (password and
  keyboard-interactive login on), sudo, and the login user (``ubuntu``, uid 1000, group sudo, sudo
  asks for the user's own password). Host keys are removed from the image and made at each
  container's first boot, so no two containers share them.
- ``busybox``: Debian's static busybox as ``/sbin/init``; builds in well under a second, for tests that
  need a running container but no SSH.

Builds are cached under a folder keyed by the recipe's hash (its inputs, :data:`RECIPE_VERSION` and the
text of the code that shapes the image), so asking again returns at once. A build happens in a
temporary folder beside the cache and is renamed into place, so an interrupted build never leaves a
half-made entry. Every command runs from an argument list, never a shell string.

The root filesystems themselves are made in :mod:`labgpu.system.rootfs`. Run
``python -m labgpu.system.base_image build ssh|busybox`` to build one from the command line.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from labgpu.errors import BadInput, LabgpuError
from labgpu.system.rootfs import (
    BUSYBOX_INITTAB,
    HOSTNAME_TEMPLATE,
    HOSTS_TEMPLATE,
    KEYGEN_UNIT,
    KEYGEN_UNIT_TEXT,
    META_NAME,
    ROOTFS_NAME,
    SSHD_CONFIG,
    ImageBuildError,
    ImageRecipe,
    Progress,
    add_user,
    build_rootfs,
    busybox_parts,
    configure_ssh_rootfs,
    debootstrap_parts,
    image_metadata,
    locked,
    pack_image,
    remove_build_dir,
)

__all__ = [
    "BUSYBOX_INITTAB",
    "DEFAULT_BUSYBOX",
    "DEFAULT_CACHE_DIR",
    "DEFAULT_INCLUDE",
    "DEFAULT_MIRROR",
    "DEFAULT_SUITE",
    "DEFAULT_UID",
    "DEFAULT_USER",
    "HOSTNAME_TEMPLATE",
    "HOSTS_TEMPLATE",
    "KEYGEN_UNIT",
    "KEYGEN_UNIT_TEXT",
    "META_NAME",
    "RECIPE_NAME",
    "RECIPE_VERSION",
    "ROOTFS_NAME",
    "SSHD_CONFIG",
    "VARIANTS",
    "BuiltImage",
    "ImageBuildError",
    "ImageRecipe",
    "Progress",
    "add_user",
    "build_image",
    "busybox_recipe",
    "cached_image",
    "configure_ssh_rootfs",
    "debootstrap_recipe",
    "host_architecture",
    "image_metadata",
    "is_static_elf",
    "main",
    "prune_cache",
    "recipe_hash",
    "resolve_cache_dir",
]

#: Bump to rebuild every cached image (e.g. after a fix outside the hashed code).
RECIPE_VERSION = 1

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_INCLUDE = (
    "openssh-server",
    "sudo",
    "iproute2",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
    "ca-certificates",
    "procps",
    # The NIC by DHCP in a container: udev marks links ready for systemd-networkd (without it they stay
    # "pending"), systemd-resolved answers the resolver; rsync for members' copies (rsync needs it on both ends).
    "udev",
    "systemd-resolved",
    "rsync",
)
DEFAULT_CACHE_DIR = Path("/var/cache/labgpu/images")
DEFAULT_BUSYBOX = Path("/bin/busybox")
DEFAULT_USER = "ubuntu"
DEFAULT_UID = 1000

RECIPE_NAME = "recipe.json"

# uname -m (and Debian's names) -> LXD/Incus architecture names.
_LXD_ARCHITECTURES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i686": "i686",
    "i386": "i686",
    "aarch64": "aarch64",
    "arm64": "aarch64",
    "armv7l": "armv7l",
    "armhf": "armv7l",
    "ppc64le": "ppc64le",
    "ppc64el": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

_SUITE_RE = re.compile(r"^[a-z][a-z0-9.-]{0,31}\Z")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}\Z")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
_MIRROR_RE = re.compile(r"^(https?|file)://[^\s'\"]+\Z")
_HASH_RE = re.compile(r"^[0-9a-f]{32}\Z")
#: debootstrap's --variant values a recipe may ask for ("default": no --variant, debootstrap's own default).
VARIANTS = ("minbase", "buildd", "default")


@dataclass(frozen=True)
class BuiltImage:
    """A built image in the cache: the two tarballs to import, and whether it was already there."""

    meta: Path
    rootfs: Path
    recipe_hash: str
    cached: bool


def host_architecture(machine: str | None = None) -> str:
    """The LXD/Incus name of this host's architecture (``uname -m``). Raises ImageBuildError if unknown."""
    machine = machine or platform.machine()
    try:
        return _LXD_ARCHITECTURES[machine]
    except KeyError:
        raise ImageBuildError(f"unsupported architecture {machine!r} for a local image") from None


def debootstrap_recipe(
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    include: Sequence[str] = DEFAULT_INCLUDE,
    user: str = DEFAULT_USER,
    uid: int = DEFAULT_UID,
    variant: str = "minbase",
    architecture: str | None = None,
) -> ImageRecipe:
    """The recipe of a Debian image with sshd: the ``include`` packages (sshd and sudo at least) installed by
    debootstrap ``variant`` on the host. Raises BadInput for a malformed suite, mirror, variant, package or
    user."""
    if not _SUITE_RE.match(suite):
        raise BadInput(f"invalid suite name {suite!r}")
    if not _MIRROR_RE.match(mirror):
        raise BadInput(f"invalid mirror {mirror!r}: expected an http://, https:// or file:// URL")
    if variant not in VARIANTS:
        raise BadInput(f"invalid debootstrap variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    for package in include:
        if not _PACKAGE_RE.match(package):
            raise BadInput(f"invalid package name {package!r}")
    if not _USER_RE.match(user):
        raise BadInput(f"invalid user name {user!r}")
    if not 1000 <= uid < 60000:
        raise BadInput(f"uid {uid} is outside 1000-59999")
    return ImageRecipe(
        kind="debootstrap",
        architecture=architecture or host_architecture(),
        suite=suite,
        mirror=mirror.rstrip("/"),
        include=tuple(sorted(set(include))),
        user=user,
        uid=uid,
        variant=variant,
    )


def busybox_recipe(*, busybox: Path = DEFAULT_BUSYBOX, architecture: str | None = None) -> ImageRecipe:
    """The recipe of the busybox test image. Reads the binary (its digest is part of the recipe).

    Raises ImageBuildError when the binary is missing or not static.
    """
    try:
        data = busybox.read_bytes()
    except FileNotFoundError:
        raise ImageBuildError(
            f"{busybox} does not exist", hint="install the static busybox: apt-get install busybox-static"
        ) from None
    if not is_static_elf(data):
        raise ImageBuildError(
            f"{busybox} is not a static binary",
            hint="install the static busybox: apt-get install busybox-static",
        )
    version = re.search(rb"BusyBox v(\d+(?:\.\d+)+)", data)
    return ImageRecipe(
        kind="busybox",
        architecture=architecture or host_architecture(),
        busybox=str(busybox),
        busybox_sha256=hashlib.sha256(data).hexdigest(),
        busybox_version=version.group(1).decode() if version else "unknown",
    )


def is_static_elf(data: bytes) -> bool:
    """Whether ``data`` is a 64-bit little-endian ELF executable with no program interpreter."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    pt_interp = 3
    types = (
        int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little")
        for i in range(phnum)
    )
    return pt_interp not in types


def recipe_hash(recipe: ImageRecipe) -> str:
    """The cache key: a hash of the recipe, :data:`RECIPE_VERSION` and the code that shapes this kind of image."""
    parts = debootstrap_parts() if recipe.kind == "debootstrap" else busybox_parts()
    code = [p if isinstance(p, str) else inspect.getsource(p) for p in parts]
    payload = json.dumps({"version": RECIPE_VERSION, "recipe": asdict(recipe), "code": code}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def resolve_cache_dir(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$LABGPU_IMAGE_CACHE``, else /var/cache/labgpu/images."""
    if cache_dir is not None:
        return cache_dir
    env = os.environ.get("LABGPU_IMAGE_CACHE")
    return Path(env) if env else DEFAULT_CACHE_DIR


def cached_image(recipe: ImageRecipe, *, cache_dir: Path | None = None) -> BuiltImage | None:
    """The cached build of ``recipe``, or None. Does no building."""
    digest = recipe_hash(recipe)
    entry = resolve_cache_dir(cache_dir) / digest
    meta, rootfs = entry / META_NAME, entry / ROOTFS_NAME
    if meta.is_file() and rootfs.is_file():
        return BuiltImage(meta=meta, rootfs=rootfs, recipe_hash=digest, cached=True)
    return None


def build_image(
    recipe: ImageRecipe, *, cache_dir: Path | None = None, progress: Progress | None = None
) -> BuiltImage:
    """Build ``recipe`` into the cache, or return the cached build at once.

    Waits for the whole build (about a minute for debootstrap, under a second for busybox) and for a
    concurrent build of the same recipe by another process. ``progress`` gets a line per step and
    debootstrap's own ``I:``/``W:``/``E:`` lines. Raises ImageBuildError with the failing command and its
    last output lines; a failed or interrupted build leaves nothing in the cache.
    """
    say = progress or (lambda _line: None)
    found = cached_image(recipe, cache_dir=cache_dir)
    if found:
        return found
    cache = resolve_cache_dir(cache_dir)
    digest = recipe_hash(recipe)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ImageBuildError(f"cannot create the image cache {cache}: {exc.strerror}") from None
    with locked(cache / f".{digest}.lock") as lock_fd:
        found = cached_image(recipe, cache_dir=cache)
        if found:  # another process built it while we waited
            return found
        for stale in cache.glob(f".build-{digest}-*"):
            remove_build_dir(stale)
        work = Path(tempfile.mkdtemp(prefix=f".build-{digest}-", dir=cache))
        try:
            rootfs, out = work / "rootfs", work / "image"
            out.mkdir()
            build_rootfs(recipe, rootfs, say, lock_fd=lock_fd)
            say(f"packing {ROOTFS_NAME}")
            pack_image(recipe, rootfs, out, recipe_hash=digest)
            (out / RECIPE_NAME).write_text(
                json.dumps({"hash": digest, "recipe": asdict(recipe)}, indent=2) + "\n"
            )
            out.rename(cache / digest)
        finally:
            remove_build_dir(work)
    say(f"built image {digest} in {cache}")
    return BuiltImage(
        meta=cache / digest / META_NAME, rootfs=cache / digest / ROOTFS_NAME, recipe_hash=digest, cached=False
    )


def prune_cache(*, keep: Collection[str], cache_dir: Path | None = None) -> list[str]:
    """Delete cached images whose hash is not in ``keep`` (old recipes); returns the hashes deleted.

    Skips an entry that is being built right now. Never touches anything but cache entries.
    """
    cache = resolve_cache_dir(cache_dir)
    removed = []
    for entry in sorted(cache.glob("*")) if cache.is_dir() else []:
        if entry.name in keep or not _HASH_RE.match(entry.name) or not entry.is_dir():
            continue
        lock = cache / f".{entry.name}.lock"
        with lock.open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(entry)  # the (empty) lock file stays: a waiting builder may hold it open
        removed.append(entry.name)
    return removed


# Command line --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labgpu.system.base_image build ssh|busybox``: build (or find) an image, print JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m labgpu.system.base_image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser(
        "build", help="build an image into the cache (or find it there) and print its paths"
    )
    build.add_argument("kind", choices=["ssh", "busybox"])
    build.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default: $LABGPU_IMAGE_CACHE or {DEFAULT_CACHE_DIR}"
    )
    build.add_argument("--suite", default=DEFAULT_SUITE)
    build.add_argument("--mirror", default=DEFAULT_MIRROR)
    build.add_argument("--busybox", type=Path, default=DEFAULT_BUSYBOX)
    build.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so an interrupted build removes its folder.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    started = time.monotonic()
    try:
        recipe = (
            debootstrap_recipe(suite=args.suite, mirror=args.mirror)
            if args.kind == "ssh"
            else busybox_recipe(busybox=args.busybox)
        )
        image = build_image(
            recipe,
            cache_dir=args.cache_dir,
            progress=None if args.quiet else lambda line: print(line, file=sys.stderr),
        )
    except LabgpuError as exc:
        print(f"error: {exc.log_message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 2 if exc.is_bad_input else 1
    result = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(image).items()}
    print(json.dumps({**result, "seconds": round(time.monotonic() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
