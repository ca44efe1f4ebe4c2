"""How a template build reports: its error, its progress (to the CLI's Rich display) and its result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from labgpu.errors import LabgpuError


class TemplateBuildError(LabgpuError):
    """A template build failed: ``step`` says where, ``command`` and ``output_tail`` what happened.

    The message is one line (step, exit status, command); the log message adds the output tail."""

    status = 500
    reason = "template-build"

    def __init__(
        self,
        message: str,
        *,
        step: str = "",
        command: Sequence[str] = (),
        output_tail: str = "",
        hint: str | None = None,
    ) -> None:
        log = message + (f"\n--- last output ---\n{output_tail}" if output_tail else "")
        super().__init__(message, hint=hint, log_message=log)
        self.step = step
        self.command = list(command)
        self.output_tail = output_tail


# Progress --------------------------------------------------------------------------------------------


class BuildReporter:
    """Hears how a build goes. The CLI shows it with Rich; this base class ignores everything.

    ``verbose``: whether the builder should read step output while it runs (for :meth:`output`)."""

    verbose: bool = False

    def start(self, name: str, total: int) -> None:
        """The build of ``name`` begins; it has ``total`` steps."""

    def step(self, index: int, total: int, name: str, title: str) -> None:
        """Step ``index`` (1-based) begins."""

    def output(self, text: str) -> None:
        """New output of the running step (only when ``verbose``)."""

    def step_done(self, index: int, total: int, name: str, seconds: float) -> None:
        """Step ``index`` ended well."""

    def note(self, message: str) -> None:
        """Something the person building should know (a kept builder, a warning)."""


# The build -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    name: str
    version: str
    fingerprint: str
    aliases: tuple[str, ...]
    spec_hash: str
    built_at: str
    size: int
    seconds: float
    builder: str
    builder_kept: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "aliases": list(self.aliases),
            "spec_hash": self.spec_hash,
            "built_at": self.built_at,
            "size": self.size,
            "seconds": round(self.seconds, 1),
            "builder": self.builder,
            "builder_kept": self.builder_kept,
        }
