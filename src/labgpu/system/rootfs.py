"""The root filesystems of labgpu's offline images, and the plumbing to make them.

:mod:`labgpu.system.base_image` decides what to build and caches it; this module does the building:
debootstrap (as root) or a busybox tree, the shaping of the root (login user, sshd, first-boot host
keys), and the two tarballs LXD and Incus import. Every function and text whose output ends up in an
image is listed in :func:`debootstrap_parts` / :func:`busybox_parts`, whose source is hashed into the
cache key. Every command runs from an argument list, never a shell string.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from labgpu.errors import LabgpuError

META_NAME = "meta.tar.gz"
ROOTFS_NAME = "rootfs.tar.gz"
KEYGEN_UNIT = "labgpu-ssh-keygen.service"

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

#: The container's NIC (a bridge or macvlan network's eth0; none when network_mode is none) takes its address,
#: route and resolver by DHCP: systemd-networkd, with systemd-resolved answering /etc/resolv.conf.
NETWORK_NAME = "80-labgpu-eth0.network"
NETWORK_TEXT = """\
# labgpu: the container's NIC (network_mode bridge or macvlan) is configured by DHCP.
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no
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


def build_rootfs(recipe: ImageRecipe, rootfs: Path, say: Progress, *, lock_fd: int) -> None:
    """Make the root filesystem of ``recipe`` in ``rootfs``: debootstrap (root only, about a minute, holding
    ``lock_fd`` open in debootstrap too) or the busybox tree. Raises ImageBuildError."""
    if recipe.kind == "debootstrap":
        _build_debootstrap_rootfs(recipe, rootfs, say, lock_fd=lock_fd)
    else:
        _build_busybox_rootfs(recipe, rootfs, say)


def pack_image(recipe: ImageRecipe, rootfs: Path, out: Path, *, recipe_hash: str) -> None:
    """Write ``out``/rootfs.tar.gz (from ``rootfs``) and ``out``/meta.tar.gz. Raises ImageBuildError."""
    _pack_rootfs(rootfs, out / ROOTFS_NAME, root_owned=recipe.kind == "busybox")
    metadata = image_metadata(recipe, recipe_hash=recipe_hash, creation_date=int(time.time()))
    _write_meta_tarball(out / META_NAME, metadata)


# The image's shape ---------------------------------------------------------------------------------
# Everything listed in debootstrap_parts/busybox_parts is hashed into the cache key: list here every
# function and text whose output ends up in the image.


def debootstrap_parts() -> tuple[Callable[..., Any] | str, ...]:
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
        NETWORK_TEXT,
        HOSTNAME_TEMPLATE,
        HOSTS_TEMPLATE,
    )


def busybox_parts() -> tuple[Callable[..., Any] | str, ...]:
    return (
        _build_busybox_rootfs,
        _pack_rootfs,
        _write_meta_tarball,
        image_metadata,
        BUSYBOX_INITTAB,
        HOSTNAME_TEMPLATE,
        HOSTS_TEMPLATE,
    )


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
    # The NIC by DHCP (systemd-networkd, not its wait-online: a container without a NIC must not wait), the
    # resolver from DHCP through systemd-resolved's stub when the image has it.
    (etc / "systemd" / "network").mkdir(parents=True, exist_ok=True)
    (etc / "systemd" / "network" / NETWORK_NAME).write_text(NETWORK_TEXT)
    lib = "/lib/systemd/system"
    if (rootfs / lib.lstrip("/") / "systemd-networkd.service").exists():
        _enable_unit(
            etc,
            "systemd-networkd.service",
            f"{lib}/systemd-networkd.service",
            wanted_by=("multi-user.target",),
        )
        _enable_unit(
            etc, "systemd-networkd.socket", f"{lib}/systemd-networkd.socket", wanted_by=("sockets.target",)
        )
    if (rootfs / lib.lstrip("/") / "systemd-resolved.service").exists():
        _enable_unit(
            etc,
            "systemd-resolved.service",
            f"{lib}/systemd-resolved.service",
            wanted_by=("multi-user.target",),
        )
        (etc / "resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    else:
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


def remove_build_dir(path: Path) -> None:
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
def locked(path: Path) -> Iterator[int]:
    """Hold an exclusive lock on ``path``; yields the locked file descriptor."""
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f.fileno()  # closing the file releases the lock (once children holding it have exited)
