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

Run ``python -m labgpu.services.templates._base_image build ssh|busybox`` to build one from the command line.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import inspect
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from labgpu.errors import BadInput, LabgpuError

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
)
DEFAULT_CACHE_DIR = Path("/var/cache/labgpu/images")
DEFAULT_BUSYBOX = Path("/bin/busybox")
DEFAULT_USER = "ubuntu"
DEFAULT_UID = 1000

META_NAME = "meta.tar.gz"
ROOTFS_NAME = "rootfs.tar.gz"
RECIPE_NAME = "recipe.json"
KEYGEN_UNIT = "labgpu-ssh-keygen.service"

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

Progress = Callable[[str], None]

SSHD_CONFIG = """\
# labgpu: members log in with a password (changed at first login) or their keys.
PasswordAuthentication yes
KbdInteractiveAuthentication yes
"""

KEYGEN_UNIT_TEXT = """\
[Unit]
Description=Generate this container's own SSH host keys (labgpu)
Before=ssh.service ssh.socket
ConditionPathExists=|!/etc/ssh/ssh_host_ed25519_key
ConditionPathExists=|!/etc/ssh/ssh_host_ecdsa_key
ConditionPathExists=|!/etc/ssh/ssh_host_rsa_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target ssh.service
"""

HOSTNAME_TEMPLATE = "{{ container.name }}\n"

HOSTS_TEMPLATE = """\
127.0.0.1\tlocalhost
127.0.1.1\t{{ container.name }}

::1\tlocalhost ip6-localhost ip6-loopback
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
"""

BUSYBOX_INITTAB = """\
::sysinit:/bin/hostname -F /etc/hostname
::sysinit:/sbin/ip link set lo up
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
"""


class ImageBuildError(LabgpuError):
    """Building an image failed; ``command`` and ``output_tail`` say where, when a command failed."""

    status = 500
    reason = "image-build"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        command: Sequence[str] = (),
        output_tail: str = "",
    ) -> None:
        log = message + (f"\n--- last output ---\n{output_tail}" if output_tail else "")
        super().__init__(message, hint=hint, log_message=log)
        self.command = list(command)
        self.output_tail = output_tail


@dataclass(frozen=True)
class ImageRecipe:
    """Everything that decides an image's content. Equal recipes give equal images (and one cache entry)."""

    kind: Literal["debootstrap", "busybox"]
    architecture: str
    suite: str = ""
    mirror: str = ""
    include: tuple[str, ...] = ()
    user: str = ""
    uid: int = 0
    busybox: str = ""
    busybox_sha256: str = ""
    busybox_version: str = ""
    variant: str = "minbase"

    @property
    def os_name(self) -> str:
        return "debian" if self.kind == "debootstrap" else "busybox"

    @property
    def release(self) -> str:
        return self.suite if self.kind == "debootstrap" else self.busybox_version

    @property
    def description(self) -> str:
        if self.kind == "debootstrap":
            return f"labgpu base: Debian {self.suite} {self.variant} with sshd ({self.architecture})"
        return f"labgpu test: busybox {self.busybox_version} ({self.architecture})"


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
    parts = _debootstrap_parts() if recipe.kind == "debootstrap" else _busybox_parts()
    code = [p if isinstance(p, str) else inspect.getsource(p) for p in parts]
    payload = json.dumps({"version": RECIPE_VERSION, "recipe": asdict(recipe), "code": code}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def image_metadata(recipe: ImageRecipe, *, recipe_hash: str, creation_date: int) -> dict[str, Any]:
    """The image's metadata.yaml as a dict: architecture, properties and the hostname/hosts templates."""
    return {
        "architecture": recipe.architecture,
        "creation_date": creation_date,
        "properties": {
            "os": recipe.os_name,
            "release": recipe.release,
            "architecture": recipe.architecture,
            "description": recipe.description,
            "labgpu.recipe": recipe_hash,
        },
        "templates": {
            "/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"},
            "/etc/hosts": {"when": ["create", "copy"], "template": "hosts.tpl"},
        },
    }


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
    with _locked(cache / f".{digest}.lock") as lock_fd:
        found = cached_image(recipe, cache_dir=cache)
        if found:  # another process built it while we waited
            return found
        for stale in cache.glob(f".build-{digest}-*"):
            _remove_build_dir(stale)
        work = Path(tempfile.mkdtemp(prefix=f".build-{digest}-", dir=cache))
        try:
            rootfs, out = work / "rootfs", work / "image"
            out.mkdir()
            if recipe.kind == "debootstrap":
                _build_debootstrap_rootfs(recipe, rootfs, say, lock_fd=lock_fd)
            else:
                _build_busybox_rootfs(recipe, rootfs, say)
            say(f"packing {ROOTFS_NAME}")
            _pack_rootfs(rootfs, out / ROOTFS_NAME, root_owned=recipe.kind == "busybox")
            metadata = image_metadata(recipe, recipe_hash=digest, creation_date=int(time.time()))
            _write_meta_tarball(out / META_NAME, metadata)
            (out / RECIPE_NAME).write_text(
                json.dumps({"hash": digest, "recipe": asdict(recipe)}, indent=2) + "\n"
            )
            out.rename(cache / digest)
        finally:
            _remove_build_dir(work)
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


# The image's shape ---------------------------------------------------------------------------------
# Everything listed in _debootstrap_parts/_busybox_parts is hashed into the cache key: list here every
# function and text whose output ends up in the image.


def _debootstrap_parts() -> tuple[Callable[..., Any] | str, ...]:
    return (
        _build_debootstrap_rootfs,
        configure_ssh_rootfs,
        add_user,
        _enable_unit,
        _pack_rootfs,
        _write_meta_tarball,
        image_metadata,
        SSHD_CONFIG,
        KEYGEN_UNIT_TEXT,
        HOSTNAME_TEMPLATE,
        HOSTS_TEMPLATE,
    )


def _busybox_parts() -> tuple[Callable[..., Any] | str, ...]:
    return (
        _build_busybox_rootfs,
        _pack_rootfs,
        _write_meta_tarball,
        image_metadata,
        BUSYBOX_INITTAB,
        HOSTNAME_TEMPLATE,
        HOSTS_TEMPLATE,
    )


def _build_debootstrap_rootfs(recipe: ImageRecipe, rootfs: Path, say: Progress, *, lock_fd: int) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError("building a debootstrap image needs root")
    debootstrap = shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if debootstrap is None:
        raise ImageBuildError("debootstrap is not installed", hint="apt-get install debootstrap")
    say(f"debootstrap {recipe.suite} from {recipe.mirror} (about a minute)")
    argv = [
        debootstrap,
        *([] if recipe.variant == "default" else [f"--variant={recipe.variant}"]),
        "--components=main",
        f"--include={','.join(recipe.include)}",
        recipe.suite,
        str(rootfs),
        recipe.mirror,
    ]
    env = {
        **os.environ,
        "LC_ALL": "C",
        "DEBIAN_FRONTEND": "noninteractive",
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    }
    try:
        # debootstrap holds the cache lock too: if this process is killed, no other build deletes the
        # folder under the orphaned debootstrap; the next build waits for it, then cleans up.
        hint = f"check that {recipe.mirror} is reachable and has {recipe.suite}"
        _run(argv, say=say, env=env, hint=hint, keep_fds=(lock_fd,))
    finally:
        _unmount_below(rootfs)  # debootstrap unmounts /proc itself, unless it was killed
    say("configuring the root filesystem")
    configure_ssh_rootfs(rootfs, user=recipe.user, uid=recipe.uid)


def configure_ssh_rootfs(rootfs: Path, *, user: str, uid: int) -> None:
    """Shape a debootstrapped root: login user, sshd, first-boot host keys, and no host-specific files."""
    etc = rootfs / "etc"
    add_user(etc, name=user, uid=uid, groups=("sudo",), days_since_epoch=int(time.time() // 86400))
    home = rootfs / "home" / user
    shutil.copytree(etc / "skel", home, symlinks=True, dirs_exist_ok=True)
    for path in [home, *home.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)
    home.chmod(0o750)

    (etc / "ssh" / "sshd_config.d").mkdir(parents=True, exist_ok=True)
    (etc / "ssh" / "sshd_config.d" / "labgpu.conf").write_text(SSHD_CONFIG)
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "systemd" / "system" / KEYGEN_UNIT).write_text(KEYGEN_UNIT_TEXT)
    _enable_unit(
        etc, KEYGEN_UNIT, f"/etc/systemd/system/{KEYGEN_UNIT}", wanted_by=("multi-user.target", "ssh.service")
    )
    _enable_unit(etc, "ssh.service", "/lib/systemd/system/ssh.service", wanted_by=("multi-user.target",))

    # Each container gets its own machine id (systemd makes one at first boot), name and resolver.
    (etc / "machine-id").unlink(missing_ok=True)
    (etc / "machine-id").write_text("")
    dbus_id = rootfs / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    (etc / "hostname").write_text("localhost\n")
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("")

    for pattern in ("var/cache/apt/*.bin", "var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*"):
        for path in rootfs.glob(pattern):
            path.unlink()
    # LXD and Incus mount their own /dev; device nodes in the image are useless.
    for path in (rootfs / "dev").iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def add_user(
    etc: Path,
    *,
    name: str,
    uid: int,
    groups: Sequence[str] = (),
    days_since_epoch: int,
    shell: str = "/bin/bash",
) -> None:
    """Add a user (and its own group, gid = uid) by editing passwd, group, shadow and gshadow under ``etc``.

    The password is locked until someone sets one; members of ``groups`` are added to those groups.
    Raises ImageBuildError if the name or uid is taken or a group is missing.
    """
    passwd = (etc / "passwd").read_text().splitlines()
    if any(line.split(":")[0] == name or line.split(":")[2] == str(uid) for line in passwd if line):
        raise ImageBuildError(f"user {name} or uid {uid} already exists in the image")
    _append(etc / "passwd", f"{name}:x:{uid}:{uid}::/home/{name}:{shell}")
    _append(etc / "shadow", f"{name}:!:{days_since_epoch}:0:99999:7:::")
    _append(etc / "group", f"{name}:x:{uid}:")
    _append(etc / "gshadow", f"{name}:!::")
    for file, members_field in (("group", 3), ("gshadow", 3)):
        lines = (etc / file).read_text().splitlines()
        for group in groups:
            index = next((i for i, line in enumerate(lines) if line.split(":")[0] == group), None)
            if index is None:
                raise ImageBuildError(f"group {group} does not exist in the image")
            fields = lines[index].split(":")
            members = [m for m in fields[members_field].split(",") if m]
            fields[members_field] = ",".join([*members, name])
            lines[index] = ":".join(fields)
        _rewrite(etc / file, "\n".join(lines) + "\n")


def _enable_unit(etc: Path, unit: str, unit_path: str, *, wanted_by: Sequence[str]) -> None:
    for target in wanted_by:
        wants = etc / "systemd" / "system" / f"{target}.wants"
        wants.mkdir(parents=True, exist_ok=True)
        if not (wants / unit).is_symlink():
            (wants / unit).symlink_to(unit_path)


def _build_busybox_rootfs(recipe: ImageRecipe, rootfs: Path, say: Progress) -> None:
    say(f"assembling a busybox {recipe.busybox_version} root filesystem")
    for folder in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "dev",
        "proc",
        "sys",
        "run",
        "root",
        "tmp",
        "var/log",
    ):
        (rootfs / folder).mkdir(parents=True, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    binary = rootfs / "bin" / "busybox"
    shutil.copyfile(recipe.busybox, binary)
    binary.chmod(0o755)
    if hashlib.sha256(binary.read_bytes()).hexdigest() != recipe.busybox_sha256:
        raise ImageBuildError(f"{recipe.busybox} changed while the image was being built; try again")
    applets = _run([str(binary), "--list-full"]).split()
    if "sbin/init" not in applets:
        raise ImageBuildError(f"{recipe.busybox} has no init applet", hint="apt-get install busybox-static")
    for applet in applets:
        link = rootfs / applet
        if "/" in applet and not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(binary, link.parent))
    etc = rootfs / "etc"
    (etc / "inittab").write_text(BUSYBOX_INITTAB)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\n")
    (etc / "hostname").write_text("localhost\n")


def _pack_rootfs(rootfs: Path, dest: Path, *, root_owned: bool) -> None:
    # gzip -1: several seconds faster than -6 on a debootstrapped root, about 8% bigger; pigz when present.
    compressor = [shutil.which("pigz") or "gzip", "-1", "-c"]
    owners = ["--owner=0", "--group=0"] if root_owned else []
    tar = [
        "tar",
        "--create",
        "--file=-",
        "--numeric-owner",
        "--one-file-system",
        "--xattrs",
        "--xattrs-include=security.capability",
        *owners,
        "-C",
        str(rootfs),
        ".",
    ]
    with dest.open("wb") as out, tempfile.TemporaryFile() as tar_err, tempfile.TemporaryFile() as gz_err:
        producer = subprocess.Popen(tar, stdout=subprocess.PIPE, stderr=tar_err)
        consumer = subprocess.Popen(compressor, stdin=producer.stdout, stdout=out, stderr=gz_err)
        assert producer.stdout is not None
        producer.stdout.close()  # so tar sees a broken pipe if the compressor dies
        for proc, argv, err in ((consumer, compressor, gz_err), (producer, tar, tar_err)):
            if proc.wait() != 0:
                err.seek(0)
                tail = err.read()[-4000:].decode(errors="replace")
                raise ImageBuildError(
                    f"{shlex.join(argv)} failed (exit {proc.returncode})", command=argv, output_tail=tail
                )


def _write_meta_tarball(dest: Path, metadata: dict[str, Any]) -> None:
    files = {
        "metadata.yaml": yaml.safe_dump(metadata, sort_keys=False),
        "templates/hostname.tpl": HOSTNAME_TEMPLATE,
        "templates/hosts.tpl": HOSTS_TEMPLATE,
    }
    with tarfile.open(dest, "w:gz") as tar:
        folder = tarfile.TarInfo("templates")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
        tar.addfile(folder)
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
            tar.addfile(info, io.BytesIO(data))


# Plumbing ------------------------------------------------------------------------------------------


def _append(path: Path, line: str) -> None:
    text = path.read_text() if path.exists() else ""
    _rewrite(path, text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")


def _rewrite(path: Path, text: str) -> None:
    """Replace a file's content, keeping its mode and owner (shadow files are 0640 root:shadow)."""
    stat = path.stat() if path.exists() else None
    path.write_text(text)
    if stat is not None:
        path.chmod(stat.st_mode & 0o7777)
        with suppress(PermissionError):
            os.chown(path, stat.st_uid, stat.st_gid)


def _run(
    argv: Sequence[str],
    *,
    say: Progress | None = None,
    env: dict[str, str] | None = None,
    hint: str | None = None,
    keep_fds: Sequence[int] = (),
) -> str:
    """Run a command, return its output; forward debootstrap-style ``I:``/``W:``/``E:`` lines to ``say``."""
    tail: deque[str] = deque(maxlen=30)
    lines: list[str] = []
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
            pass_fds=tuple(keep_fds),
            start_new_session=True,  # its own process group: stopped as a whole below
        )
    except FileNotFoundError:
        raise ImageBuildError(f"{argv[0]} is not installed", command=argv) from None
    except OSError as exc:
        raise ImageBuildError(f"cannot run {argv[0]}: {exc.strerror}", command=argv) from None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            lines.append(line)
            if say and line[:3] in ("I: ", "W: ", "E: "):
                say(line)
        rc = proc.wait()
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): stop the command and everything it started (dpkg in the chroot)
        # before the caller deletes the build folder; /proc left mounted is unmounted by the caller.
        _stop_process_group(proc)
        raise
    if rc != 0:
        raise ImageBuildError(
            f"{shlex.join(argv)} failed (exit {rc})", hint=hint, command=argv, output_tail="\n".join(tail)
        )
    return "\n".join(lines)


def _stop_process_group(proc: subprocess.Popen[str]) -> None:
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
            return


def _mounts_below(path: Path) -> list[str]:
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unmount_below(path: Path) -> None:
    for point in _mounts_below(path):
        if subprocess.run(["umount", point], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", point], capture_output=True)


def _remove_build_dir(path: Path) -> None:
    """Delete a build folder, never following a mount (a left-over /proc or /dev) into the host."""
    if not path.exists():
        return
    _unmount_below(path)
    left = _mounts_below(path)
    if left:
        raise ImageBuildError(
            f"cannot remove {path}: still mounted: {', '.join(left)}",
            hint="unmount them, then delete the folder",
        )
    shutil.rmtree(path)


@contextmanager
def _locked(path: Path) -> Iterator[int]:
    """Hold an exclusive lock on ``path``; yields the locked file descriptor."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f.fileno()  # closing the file releases the lock (once children holding it have exited)


# Command line --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labgpu.services.templates._base_image build ssh|busybox``: build (or find) an image, print JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m labgpu.services.templates._base_image",
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
