"""Steps of a long command shown as they happen (`member add`, `member reset`, `member move`).

The services tell a reporter each step as it begins (services.members.StepReporter); this turns that into
what an admin watches: on a terminal, a line per finished step with its duration and the current step
with a spinner and its running time; elsewhere (a pipe, a log), one plain line per finished step. A step
that fails is marked on a terminal only: the error line that follows says what failed, and a script
reading the output gets nothing else."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.text import Text


class LiveSteps:
    """A context manager and a step reporter: ``with LiveSteps(console) as steps: service(report=steps)``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.spinner = Spinner("dots", style="cyan")
        self.current: str | None = None
        self.started = 0.0
        self.total_started = 0.0

    def __enter__(self) -> Self:
        self.total_started = time.monotonic()
        if self.console.is_terminal:
            self.live = Live(
                get_renderable=self._render, console=self.console, refresh_per_second=10, transient=True
            )
            self.live.start()
        return self

    def __call__(self, step: str) -> None:
        now = time.monotonic()
        self._finish(now, ok=True)
        self.current, self.started = step, now

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        now = time.monotonic()
        self._finish(now, ok=kind is None)
        if self.live is not None:
            self.live.stop()
        if kind is None:
            total = f"{now - self.total_started:.2f}s"
            if self.live is None:
                self.console.print(f"total: {total}", highlight=False)
            else:
                self.console.print(Text.assemble("  total ", (total, "bold")))

    def _finish(self, now: float, *, ok: bool) -> None:
        if self.current is None:
            return
        step, seconds = self.current, now - self.started
        self.current = None
        if self.live is None:
            if ok:
                self.console.print(f"{step}: {seconds:.2f}s", highlight=False, markup=False, soft_wrap=True)
            return
        mark = ("✓ ", "green") if ok else ("✗ ", "red")
        self.console.print(Text.assemble(mark, step, (f"  {seconds:.2f}s", "dim")), soft_wrap=True)

    def _render(self) -> RenderableType:
        if self.current is None:
            return Text("")
        now = time.monotonic()
        self.spinner.update(
            text=Text.from_markup(
                f"{escape(self.current)} [dim]{now - self.started:.1f}s (total {now - self.total_started:.1f}s)[/]"
            )
        )
        return Group(self.spinner)
