"""Pure rules about shares: their names, the host folders they may expose, where they may be mounted.

A share is a host folder bind-mounted into containers as the disk device ``share-NAME``. The rules
here keep a share from exposing what must stay private (the host's system folders, the daemons'
storage, labgpu's own state, the members' homes) and from being mounted where it would break or hide
part of the container's system.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from labgpu.errors import BadInput

# Used in the device name "share-NAME": lower-case letters, digits, dots, hyphens and underscores,
# starting and ending with a letter or digit ("cuda-11.8", "imagenet", "matlab_r2024a").
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,38}[a-z0-9])?\Z")

# Host folders never shared, nor anything inside them, nor any folder that contains them.
FORBIDDEN_SOURCES = (
    "/etc",
    "/root",
    "/boot",
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/var/lib/lxd",
    "/var/lib/incus",
    "/var/snap/lxd",
    "/var/lib/labgpu",
)

# Container paths whose whole subtree is off limits: kernel interfaces, and /etc (a mount over
# /etc/ssh or /etc/sudoers.d breaks logins).
FORBIDDEN_MOUNT_TREES = ("/proc", "/sys", "/dev", "/etc")

# Container folders a share may not replace (mounting over them hides the system), though a share
# may be mounted below most of them: /usr/local/cuda-12.4 and /opt/matlab are the usual places.
FORBIDDEN_MOUNT_POINTS = frozenset(
    {
        "/", "/bin", "/boot", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
        "/root", "/run", "/sbin", "/srv", "/usr", "/usr/bin", "/usr/include", "/usr/lib", "/usr/lib64",
        "/usr/local", "/usr/local/bin", "/usr/local/lib", "/usr/sbin", "/usr/share", "/var", "/var/lib",
        "/var/log",
        "/tmp", "/var/tmp",  # noqa: S108 - container folders a share may not hide, not temporary files
    }
)  # fmt: skip


def validate_share_name(name: str) -> str:
    """Return ``name`` if it can name a share (and its ``share-NAME`` device); else BadInput."""
    if not name:
        raise BadInput("a share name is required")
    if not _NAME_RE.match(name):
        raise BadInput(
            f"invalid share name {name[:50]!r}: use 1-40 lower-case letters, digits, dots, hyphens and "
            "underscores, starting and ending with a letter or digit (e.g. cuda-12.4)"
        )
    return name


def _norm(path: str) -> PurePosixPath:
    return PurePosixPath(posixpath.normpath(path))


def _within(path: PurePosixPath, root: PurePosixPath) -> bool:
    return path == root or root in path.parents


def check_share_source(source: str, *, real_path: str, private: Iterable[str] = ()) -> str:
    """Check a host folder a share would expose; return its normalised form. Raises BadInput.

    ``real_path`` is the folder with symbolic links resolved (both forms are checked, so a link
    cannot smuggle in a forbidden folder); ``private`` adds the installation's own private folders
    (the state dir, the homes base, the home archive). The folder's existence is the caller's job."""
    if not source.startswith("/"):
        raise BadInput(f"the share source {source!r} must be an absolute host path")
    if not source.isprintable():
        raise BadInput(f"the share source {source!r} contains control characters")
    if ".." in PurePosixPath(source).parts:
        raise BadInput(f"the share source {source!r} must not contain '..'")
    guarded = [_norm(p) for p in (*FORBIDDEN_SOURCES, *private)]
    for candidate in (_norm(source), _norm(real_path)):
        if candidate == PurePosixPath("/"):
            raise BadInput("refused: sharing the host's whole filesystem (/)")
        for root in guarded:
            if _within(candidate, root):
                raise BadInput(f"refused: {source} is {root} or inside it, which is never shared")
            if candidate in root.parents:
                raise BadInput(f"refused: {source} contains {root}, which is never shared")
    return str(_norm(source))


def check_share_path(path: str, *, container_user: str = "ubuntu") -> str:
    """Check where a share is mounted inside containers; return the normalised path. Raises BadInput."""
    if not path.startswith("/"):
        raise BadInput(f"the mount path {path!r} must be an absolute path inside the container")
    if not path.isprintable():
        raise BadInput(f"the mount path {path!r} contains control characters")
    if ".." in PurePosixPath(path).parts:
        raise BadInput(f"the mount path {path!r} must not contain '..'")
    p = _norm(path)
    for tree in FORBIDDEN_MOUNT_TREES:
        if _within(p, PurePosixPath(tree)):
            raise BadInput(f"refused: a share cannot be mounted at {p} (inside {tree})")
    user_home = PurePosixPath("/home") / container_user
    if str(p) in FORBIDDEN_MOUNT_POINTS or p == user_home:
        raise BadInput(f"refused: mounting a share at {p} would hide the container's own {p}")
    return str(p)
