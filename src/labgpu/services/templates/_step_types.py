"""The actions and steps of a template build, as data (made by ``_steps``, run by ``_build``)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Run:
    """Run a command in the builder (an argument list)."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Push:
    """Write a file in the builder, from bytes or from a file on the host; ``owner`` is a user name."""

    path: str
    data: bytes | None = None
    source: Path | None = None
    mode: int = 0o644
    owner: str = "root"

    def describe(self) -> str:
        return f"write {self.path}"


@dataclass(frozen=True)
class Download:
    """Download a file on the host (the builder may have no network) and write it in the builder."""

    url: str
    path: str
    sha256: str | None = None

    def describe(self) -> str:
        return f"download {self.url}"


@dataclass(frozen=True)
class HostBundle:
    """Fetch packages on the host (``pip download`` or ``npm install``: the builder needs no network), as one
    tar, and unpack it in the builder under ``dest``."""

    kind: str  # "pip" or "npm"
    dest: str
    packages: tuple[str, ...]
    version: str  # the builder's Python (pip) or the Node.js to bundle (npm)
    index_url: str | None = None

    def describe(self) -> str:
        tool = "pip download" if self.kind == "pip" else "npm install"
        return f"{tool} {' '.join(self.packages)} on the host"


Action = Run | Push | Download | HostBundle


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    actions: tuple[Action, ...]
    needs_network: bool = False
