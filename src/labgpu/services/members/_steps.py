"""Telling a caller where a long operation is (member add, reset, move) while it runs.

The services stay free of any UI: they call a :data:`StepReporter` with a short description of each step as
it begins, so the previous step has ended. The CLI shows the steps live with their durations; the bench
times them; the portal passes nothing."""

from __future__ import annotations

from collections.abc import Callable

#: Called with a short description ("starting the container") when a step begins.
StepReporter = Callable[[str], None]


def silent(step: str) -> None:
    """The reporter of a caller that does not listen."""
