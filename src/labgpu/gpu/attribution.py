"""Which container a host process belongs to, read from ``/proc/PID/cgroup``.

NVML reports GPU processes by host PID and nothing else. LXD and Incus both run containers
through liblxc, which puts every process of a container in a cgroup named after it:

- ``lxc.payload.NAME`` (liblxc 4.0+, so LXD 4+ (deb or snap) and every Incus), with
  ``lxc.payload.PROJECT_NAME`` for an instance in a project other than ``default``. Project and
  instance names cannot contain ``_``, so the split is unambiguous.
- ``lxc.payload/NAME`` and ``lxc/NAME``: the layouts of liblxc 3.x and older (accepted, never seen here).
- ``lxc.monitor.NAME`` (and ``lxc.monitor/NAME``): the host-side ``[lxc monitor]`` process of a
  container. It is on the host and never uses a GPU, but it is reported as the container's monitor.

Inside the container, systemd (or anyone) nests cgroups below that one
(``/lxc.payload.NAME/system.slice/ssh.service``, ``/lxc.payload.NAME/.lxc``); the outermost
``lxc.payload`` component is the container as the host sees it (a container nested in a member's
container counts as the member's).

Every line of the file is looked at: the cgroup v2 line (``0::/path``) first, then the v1
hierarchies (``name=systemd`` first), because on a hybrid host liblxc may have placed the process
only in the v1 hierarchies. Anything without an lxc component is a host process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

HOST = "host"


class OwnerKind(StrEnum):
    CONTAINER = "container"
    HOST = "host"
    MONITOR = "monitor"  # liblxc's monitor of a container: a host process
    UNKNOWN = "unknown"  # the process ended, or its cgroup file cannot be read


@dataclass(frozen=True)
class ProcessOwner:
    """Where a process runs: a container (name and project), the host, or unknown."""

    kind: OwnerKind
    container: str | None = None
    project: str | None = None  # None: the default project
    cgroup: str = ""  # the cgroup path the answer was read from
    detail: str = ""  # why it is unknown

    @property
    def in_container(self) -> bool:
        return self.kind is OwnerKind.CONTAINER

    @property
    def label(self) -> str:
        """What a person sees: the container (``project/name`` outside the default project),
        ``host``, or ``?``. The monitor is shown as the container's name with a note."""
        if self.kind is OwnerKind.HOST:
            return HOST
        if self.kind is OwnerKind.UNKNOWN or self.container is None:
            return "?"
        name = f"{self.project}/{self.container}" if self.project else self.container
        return name if self.kind is OwnerKind.CONTAINER else f"{name} (lxc monitor)"


def _split_project(value: str) -> tuple[str | None, str]:
    project, sep, name = value.rpartition("_")
    return (project, name) if sep and project and name else (None, value)


def _match(path: str) -> tuple[OwnerKind, str | None, str | None] | None:
    """(kind, project, container) from the outermost lxc component of one cgroup path."""
    parts = [p for p in path.split("/") if p]
    for i, part in enumerate(parts):
        following = parts[i + 1] if i + 1 < len(parts) else ""
        for prefix, kind in (("lxc.payload.", OwnerKind.CONTAINER), ("lxc.monitor.", OwnerKind.MONITOR)):
            if part.startswith(prefix) and len(part) > len(prefix):
                project, name = _split_project(part[len(prefix) :])
                return kind, project, name
        if part in ("lxc.payload", "lxc") and following:
            project, name = _split_project(following)
            return OwnerKind.CONTAINER, project, name
        if part == "lxc.monitor" and following:
            project, name = _split_project(following)
            return OwnerKind.MONITOR, project, name
    return None


def _ordered_paths(text: str) -> list[str]:
    """The cgroup paths of the file, the v2 line first, then name=systemd, then the controllers."""
    v2: list[str] = []
    systemd: list[str] = []
    rest: list[str] = []
    for line in text.splitlines():
        hierarchy, sep1, remainder = line.partition(":")
        controllers, sep2, path = remainder.partition(":")
        if not (sep1 and sep2):
            continue
        if hierarchy == "0" and controllers == "":
            v2.append(path)
        elif controllers == "name=systemd":
            systemd.append(path)
        else:
            rest.append(path)
    return v2 + systemd + rest


@lru_cache(maxsize=4096)  # the processes of one container share one text
def parse_cgroup_file(text: str) -> ProcessOwner:
    """Where the process whose ``/proc/PID/cgroup`` reads ``text`` runs."""
    paths = _ordered_paths(text)
    if not paths:
        return ProcessOwner(OwnerKind.UNKNOWN, detail="empty or unreadable cgroup file")
    monitor: ProcessOwner | None = None
    for path in paths:
        found = _match(path)
        if found is None:
            continue
        kind, project, name = found
        if kind is OwnerKind.CONTAINER:
            return ProcessOwner(kind, container=name, project=project, cgroup=path)
        monitor = monitor or ProcessOwner(kind, container=name, project=project, cgroup=path)
    if monitor is not None:
        return monitor
    return ProcessOwner(OwnerKind.HOST, cgroup=paths[0])


def _read(path: str) -> str:
    # os.open/os.read rather than Path.read_text: a sweep reads two small files per GPU process,
    # and the text layer's overhead is most of the cost (bench/gpu.py).
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def container_of_pid(pid: int, proc_root: str | Path = "/proc") -> ProcessOwner:
    """Where host process ``pid`` runs, read from ``<proc_root>/<pid>/cgroup``.

    ``.kind`` is CONTAINER (``.container`` names it), HOST, MONITOR, or UNKNOWN when the process has
    ended or the file cannot be read (``hidepid`` mounts, another PID namespace). Never raises."""
    path = f"{proc_root}/{int(pid)}/cgroup"
    try:
        text = _read(path)
    except FileNotFoundError:
        return ProcessOwner(OwnerKind.UNKNOWN, detail=f"process {pid} is gone or not visible from here")
    except PermissionError:
        return ProcessOwner(OwnerKind.UNKNOWN, detail=f"no permission to read {path}")
    except OSError as exc:
        return ProcessOwner(OwnerKind.UNKNOWN, detail=f"cannot read {path}: {exc.strerror or exc}")
    return parse_cgroup_file(text)


def command_of_pid(pid: int, proc_root: str | Path = "/proc") -> str:
    """The process's command name (``/proc/PID/comm``), or "" when it cannot be read."""
    try:
        return _read(f"{proc_root}/{int(pid)}/comm").strip()
    except OSError:
        return ""


def container_pid_of(pid: int, proc_root: str | Path = "/proc") -> int | None:
    """The pid of host process ``pid`` inside its own PID namespace (the last ``NSpid`` of
    ``/proc/PID/status``), what ``kill`` inside the container takes; None when it cannot be read."""
    try:
        text = _read(f"{proc_root}/{int(pid)}/status")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("NSpid:"):
            parts = line.split()[1:]
            return int(parts[-1]) if parts and parts[-1].isdigit() else None
    return None


def attribute_pids(pids: Iterable[int], proc_root: str | Path = "/proc") -> dict[int, ProcessOwner]:
    """:func:`container_of_pid` for each pid (each read once, however often it is listed)."""
    return {pid: container_of_pid(pid, proc_root) for pid in dict.fromkeys(pids)}
