"""What every CLI command gets: settings, runtime client and store, built lazily.

Nothing is built before a command needs it, so `labgpu --help` works without a
config file, a database or a daemon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from labgpu.settings import Settings, load_settings

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient


@dataclass
class CliContext:
    config_path: Path | None = None
    console: Console = field(default_factory=Console)
    _settings: Settings | None = None
    _runtime: RuntimeClient | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def runtime(self) -> RuntimeClient:
        if self._runtime is None:
            from labgpu.runtime.client import RuntimeClient

            self._runtime = RuntimeClient.from_settings(self.settings)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None


def get_context(ctx: typer.Context) -> CliContext:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliContext):  # a sub-app invoked on its own (tests)
        obj = CliContext()
        ctx.find_root().obj = obj
    return obj


def print_json(data: Any) -> None:
    """Machine output: plain JSON on stdout, no colours, no wrapping."""
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
