"""The fault matrix and the helpers every fault scenario shares.

A scenario injects ONE fault (a SIGKILL right after a named step, a daemon restart, a full disk),
recovers the way an admin would (``labgpu reconcile``, or the next run of the job) and then checks the
invariants of :mod:`labgpu.services.ops._invariants`, with a marker file written into the member's home
before the fault. The CI form runs :data:`QUICK` only; ``LABGPU_FAULTS=full`` (``scripts/fault-suite``)
runs the whole matrix.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from labgpu.services.members._provision import PROVISION_STEPS
from labgpu.services.ops._invariants import Marker

LABGPU = [sys.executable, "-m", "labgpu.cli"]

ADD_STEPS = PROVISION_STEPS
RESET_STEPS = ("reset-marked", "reset-deleted")
RM_STEPS = ("rm-marked", "rm-container", "rm-home")
MOVE_STEPS = (
    "move-marked",
    "move-stopped",
    "move-copying",
    "move-copied",
    "move-home",
    "move-started",
    "move-committed",
    "move-source-deleted",
)
CLUSTER_MOVE_STEPS = tuple(s for s in MOVE_STEPS if s != "move-copying")  # the cluster copies itself
BOOKING_STEPS = ("booking-advanced", "booking-attached")
ALL_STEPS = frozenset((*ADD_STEPS, *RESET_STEPS, *RM_STEPS, *MOVE_STEPS, *BOOKING_STEPS))

# The CI form: one representative step per operation (a late one, where most is already made).
QUICK = {
    "add": {"container"},
    "reset": {"reset-deleted"},
    "rm": {"rm-container"},
    "booking-start": {"booking-advanced"},
    "booking-end": set(),
    "move-standalone": {"move-copied"},
    "move-cluster": set(),
    "daemon-restart": {"container"},
    "disk-full": {"state-dir", "state-dir-while-open"},
}


def full_run() -> bool:
    return os.environ.get("LABGPU_FAULTS") == "full"


def steps(scenario: str, names: Iterable[str]) -> list[Any]:
    """pytest params for ``scenario``'s steps; those outside the CI form are marked ``faults_full``
    (deselected unless LABGPU_FAULTS=full)."""
    return [
        pytest.param(s, id=s, marks=() if s in QUICK[scenario] else (pytest.mark.faults_full,)) for s in names
    ]


def run_labgpu(
    environ: dict[str, str], *args: str, kill_after: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = dict(environ)
    if kill_after is not None:
        env["LABGPU_FAULT_KILL_AFTER"] = kill_after
    return subprocess.run(
        [*LABGPU, *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


def write_marker(home: Path, what: str) -> Marker:
    """A file the member 'wrote' before the fault; it must be there, unchanged, after the recovery."""
    marker = Marker(path="fault-marker.txt", content=f"written before the fault: {what}\n")
    (home / marker.path).write_text(marker.content)
    return marker
