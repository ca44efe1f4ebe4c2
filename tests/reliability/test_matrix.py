"""The fault matrix covers every checkpoint in labgpu (a new step without a fault scenario fails here)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.reliability.harness import ALL_STEPS, QUICK

SRC = Path(__file__).resolve().parents[2] / "src" / "labgpu"


def test_every_checkpoint_is_in_the_fault_matrix() -> None:
    found = set()
    for path in SRC.rglob("*.py"):
        found |= set(re.findall(r"checkpoint\(\"([a-z-]+)\"\)", path.read_text()))
    assert found, "no checkpoint found: did the fault injection move?"
    assert found == set(ALL_STEPS)


def test_the_ci_form_takes_one_step_of_each_kill_scenario() -> None:
    assert all(
        steps <= ALL_STEPS for name, steps in QUICK.items() if name not in ("daemon-restart", "disk-full")
    )
