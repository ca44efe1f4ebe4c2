"""/etc/subuid and /etc/subgid: what root may map, read and planned here, written with files.py."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from labgpu.domain.subid import SubidRange, add_subid_range, clash_with_container_map, parse_subid
from labgpu.errors import LabgpuError


@dataclass(frozen=True)
class SubidPlan:
    kind: str  # "subuid" or "subgid"
    path: Path
    new_text: str
    added: list[SubidRange]
    clash: SubidRange | None = None  # the containers' own range, when the members' range overlaps it


def plan_subid(kind: str, path: Path, *, start: int, count: int) -> SubidPlan:
    """What the file must become so that root may map ``start .. start+count-1``.
    Raises LabgpuError when the file exists and cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise LabgpuError(f"cannot read {path}: {exc.strerror or exc}") from None
    clash = clash_with_container_map(parse_subid(text), start=start, count=count)
    if clash is not None:
        return SubidPlan(kind=kind, path=path, new_text=text, added=[], clash=clash)
    new_text, added = add_subid_range(text, owner="root", start=start, count=count)
    return SubidPlan(kind=kind, path=path, new_text=new_text, added=added)


def check_writable(path: Path) -> None:
    """Raises LabgpuError (run as root) when ``path`` could not be written."""
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK):
        raise LabgpuError(
            f"cannot write {path} (permission denied)",
            hint="run `labgpu host init` as root (sudo)",
        )
