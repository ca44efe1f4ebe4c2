"""Host files written in place: atomically, root-owned, and only through folders only root can change."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

#: The first line of every file labgpu writes into the host's configuration (and the test that it did).
MARKER = "# Managed by labgpu"


def write_atomic(path: Path, text: str, *, mode: int) -> bool:
    """Write ``text`` to ``path`` (root-owned, ``mode``) unless it already holds exactly that.
    Returns True when the file changed."""
    if path.is_file() and not path.is_symlink():
        info = path.stat()
        if path.read_text() == text and stat.S_IMODE(info.st_mode) == mode and info.st_uid == 0:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, text, mode, prefix=".labgpu-", suffix=".tmp")
    return True


def write_file_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, keeping its mode (0644 for a new file).

    Readers see the old file or the new one, never half of it."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    _replace(path, text, mode, prefix=f".{path.name}.")


def _replace(path: Path, text: str, mode: int, *, prefix: str, suffix: str = "") -> None:
    """Write ``text`` to a temporary file beside ``path`` (synced, ``mode``), then rename it over ``path``:
    readers see the old file or the new one, never half of it. The temporary file is removed on failure."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_root_folder(folder: Path, *, mode: int) -> None:
    """Create ``folder`` (and its parents) owned by root with ``mode``."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chown(folder, 0, 0)
    folder.chmod(mode)


def is_managed(path: Path) -> bool:
    """Whether ``path`` is a file labgpu wrote (it carries :data:`MARKER`)."""
    try:
        return path.is_file() and MARKER in path.read_text()
    except OSError:
        return False


def unsafe_parent(path: Path) -> Path | None:
    """The first folder above ``path`` that someone other than root could change, if any."""
    for parent in [path.parent, *path.parent.parents]:
        try:
            info = parent.stat()
        except FileNotFoundError:
            continue
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return parent
    return None


def world_traversable(path: Path) -> Path | None:
    """The first folder on the way to ``path`` that other users cannot enter, if any."""
    for candidate in (path, path.resolve()):
        for parent in reversed(candidate.parents):
            try:
                if not parent.stat().st_mode & stat.S_IXOTH:
                    return parent
            except FileNotFoundError:
                return parent
    return None
