"""Lanes: which tests may run beside each other under pytest-xdist (``scripts/test`` runs ``-n 4``).

Most tests may run at the same time as any other: they make uniquely named objects and look only at
those. A lane is a set of tests that must not: under xdist they all run on one worker, one after another,
while other workers run everything else (tests in no lane, one at a time, wherever a worker is free). Why
each lane exists is in :func:`lane_of`. Tests that must not run beside ANY other test are marked
``serial`` instead, and scripts/test runs them afterwards, alone.

xdist's own ``xdist_group`` marks are not used: ``--dist loadgroup`` passes the group in the test's node
id, which pytest 9.2 no longer lets a plugin change, and then it distributes the tests as if there were no
groups, silently (pytest-dev/pytest-xdist#1386). Here each worker writes the lanes of the tests it
collected (from the tests' fixtures, parameters and marks) to a file, and the controller's scheduler, a
LoadScopeScheduling whose scope is the lane, reads it. It serves ``-n N`` with ``--dist load`` (the default)
or ``loadgroup``; the other ``--dist`` modes are refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

LANES_FILE_VAR = "LABGPU_TEST_LANES_FILE"


def lane_of(item: pytest.Item) -> str | None:
    """The lane of a test, or None for a test that may run beside any other."""
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    # labgpu's own test cluster is a handful of small daemons; its tests count and place containers there,
    # and test_moves gives every killed move the same member name.
    if "test_daemons" in getattr(item, "fixturenames", ()):
        return "test-cluster"
    # LXD 5.0 on this machine cannot use idmapped mounts and shifts every new container's files at its first
    # start; a shift fails now and then ("Failed to change ownership of ...", its file descriptors closed
    # under it) while the daemon serves other requests at the same time. Incus uses idmapped mounts.
    if params.get("daemon_kind") == "lxd":
        return "lxd"
    marker = item.get_closest_marker("lane")
    return str(marker.args[0]) if marker is not None else None


def share_lanes_with_workers(config: pytest.Config) -> None:
    """In the controller of an xdist run: where the workers are to write the lanes (they inherit the
    environment). Refuses the ``--dist`` modes that would run the tests of a lane at the same time."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not config.getoption("numprocesses", None):
        return
    dist = config.getvalue("dist")
    if dist not in ("load", "loadgroup"):
        raise pytest.UsageError(f"--dist {dist} would run the tests of a lane at once (tests/lanes.py)")
    folder = Path(tempfile.mkdtemp(prefix="labgpu-test-lanes-"))
    os.environ[LANES_FILE_VAR] = str(folder / "lanes.json")


def write_lanes(items: list[pytest.Item]) -> None:
    """In an xdist worker: node id -> lane of every collected test (every worker writes the same)."""
    path = os.environ.get(LANES_FILE_VAR)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not path or not worker:
        return
    lanes = {item.nodeid: lane for item in items if (lane := lane_of(item)) is not None}
    tmp = Path(f"{path}.{worker}")
    tmp.write_text(json.dumps(lanes))
    tmp.replace(path)


def make_scheduler(config: pytest.Config, log: object) -> object | None:
    """The scheduler for ``-n N``: for ``--dist load`` (xdist's default) and ``loadgroup`` alike."""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        """Work units: a whole lane, or one test in no lane. The biggest units go first (xdist's
        loadscope order), so the long lanes start at once."""

        lanes: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.lanes is None:  # first asked once every worker has collected, so the file is there
                self.lanes = json.loads(Path(os.environ[LANES_FILE_VAR]).read_text())
            lane = self.lanes.get(nodeid)
            return f"lane:{lane}" if lane is not None else nodeid

    return LaneScheduling(config, log)  # type: ignore[arg-type]
