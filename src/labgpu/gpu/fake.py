"""FAKE GPU sources for tests, the benchmark and demos on hosts without a GPU.

Nothing here talks to NVML. :class:`RecordedNvml` replays a reading recorded with
``labgpu gpu record FILE`` on a real GPU host (or written by hand); it subclasses the
real interface so code under test cannot tell, except that the data never changes.
"""

from __future__ import annotations

import json
from pathlib import Path

from labgpu.gpu.nvml import GpuSource, NvmlReading, NvmlUnavailable


class RecordedNvml(GpuSource):
    """FAKE: replays one recorded :class:`NvmlReading`, or fails like a host without NVML."""

    def __init__(
        self, reading: NvmlReading | None = None, *, unavailable: str | None = None, hint: str | None = None
    ) -> None:
        if reading is None and unavailable is None:
            raise ValueError("RecordedNvml needs a reading or an unavailable reason")
        self.reading = reading
        self.unavailable = unavailable
        self.hint = hint
        self.reads = 0

    @classmethod
    def from_file(cls, path: Path) -> RecordedNvml:
        data = json.loads(path.read_text())
        # A recording may hold the reading itself or {"reading": ..., "note": ...}.
        return cls(NvmlReading.from_json(data.get("reading", data)))

    def read(self) -> NvmlReading:
        self.reads += 1
        if self.reading is None:
            raise NvmlUnavailable(self.unavailable or "NVML unavailable", hint=self.hint)
        return self.reading


def record(source: GpuSource, path: Path) -> NvmlReading:
    """Read once from ``source`` and save the reading as JSON (for bug reports and fixtures)."""
    reading = source.read()
    path.write_text(json.dumps(reading.to_json(), indent=2) + "\n")
    return reading


def write_proc_tree(root: Path, processes: dict[int, tuple[str, str]]) -> Path:
    """FAKE /proc: ``root/PID/cgroup`` and ``root/PID/comm`` for each pid -> (cgroup text, command)."""
    for pid, (cgroup, comm) in processes.items():
        d = root / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup").write_text(cgroup)
        (d / "comm").write_text(comm + "\n")
    return root


def load_scenario(path: Path) -> tuple[RecordedNvml, dict[int, tuple[str, str]]]:
    """A fixture file of tests/fixtures/gpu/nvml: the recorded reading, and for each pid the
    (cgroup text, command) its /proc entry gets (cgroup paths are relative to the fixture folder)."""
    data = json.loads(path.read_text())
    base = path.parent.parent
    processes = {
        int(pid): ((base / entry["cgroup"]).read_text(), str(entry["comm"]))
        for pid, entry in (data.get("proc") or {}).items()
    }
    return RecordedNvml(NvmlReading.from_json(data["reading"])), processes
