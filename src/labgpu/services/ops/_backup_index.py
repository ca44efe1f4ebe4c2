"""Backups on disk: the manifest's format, listing, finding one by name, and retention.

A backup is one folder, ``labgpu-backup-YYYYMMDDTHHMMSSZ``, with a ``manifest.json`` that says what is
inside (a sha256 for every file); see :mod:`labgpu.services.ops._backups` for what it holds.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labgpu.errors import BadInput, LabgpuError, NotFound
from labgpu.services.context import Services

FORMAT = "labgpu-backup"
FORMAT_VERSION = 1
PREFIX = "labgpu-backup-"
_NAME_RE = re.compile(r"^labgpu-backup-\d{8}T\d{6}Z$")
COMPRESSIONS = ("gzip", "zstd", "xz", "bzip2", "none")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class BackupInfo:
    name: str
    path: Path
    created_at: str
    size: int
    store: str
    members: list[str]
    containers: list[str]
    homes: list[str]
    labgpu: str

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["path"] = str(self.path)
        return out


def parse_containers(value: str | None, all_names: Sequence[str]) -> list[str]:
    """The members whose containers go into the backup: all, none, or NAME,NAME. Raises BadInput."""
    if value is None or value.strip() == "all":
        return list(all_names)
    if value.strip() in ("none", ""):
        return []
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [w for w in wanted if w not in all_names]
    if unknown:
        raise BadInput(f"no member named {', '.join(unknown)}", hint="give all, none or member names")
    return list(dict.fromkeys(wanted))


def apply_retention(dest: Path, keep: int) -> list[str]:
    """Delete complete backups in ``dest`` beyond the newest ``keep``; returns their names. Only folders
    that are labgpu backups (their name and manifest say so) are ever touched."""
    backups = list_backups(dest)
    removed = []
    for info in backups[keep:]:
        shutil.rmtree(info.path)
        removed.append(info.name)
    return removed


# List ---------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, Any]:
    """A backup's manifest. Raises NotFound / BadInput when ``path`` is no labgpu backup."""
    try:
        data = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise NotFound(f"{path} is not a labgpu backup (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}/manifest.json cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{path} is not a labgpu backup")
    if data.get("version") != FORMAT_VERSION:
        raise BadInput(
            f"{path} is a backup of format {data.get('version')}; this labgpu reads {FORMAT_VERSION}"
        )
    return data


def _info(path: Path, manifest: dict[str, Any]) -> BackupInfo:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return BackupInfo(
        name=path.name,
        path=path,
        created_at=str(manifest.get("created_at", "")),
        size=size,
        store=str((manifest.get("store") or {}).get("backend", "")),
        members=[str(m["name"]) for m in manifest.get("members") or []],
        containers=[str(c["container"]) for c in manifest.get("containers") or []],
        homes=[str(h["member"]) for h in manifest.get("homes") or []],
        labgpu=str(manifest.get("labgpu", "")),
    )


def list_backups(dest: Path) -> list[BackupInfo]:
    """The complete backups in ``dest``, newest first."""
    if not dest.is_dir():
        return []
    out = []
    for path in dest.iterdir():
        if not path.is_dir() or not _NAME_RE.match(path.name):
            continue
        try:
            out.append(_info(path, read_manifest(path)))
        except LabgpuError:
            continue
    return sorted(out, key=lambda b: (b.created_at, b.name), reverse=True)


def resolve_backup(svc: Services, given: str) -> Path:
    """A backup folder from a path, or from a name in the backup_dir setting. Raises NotFound."""
    path = Path(given)
    if not path.exists() and "/" not in given:
        path = svc.settings.backup_dir / given
    if not path.is_dir():
        raise NotFound(f"no backup at {given}", hint="list them with `labgpu backup list`")
    return path
