"""FAKE GPU sources for tests, the benchmark and demos on hosts without a GPU.

Nothing here talks to NVML. :class:`RecordedNvml` replays a reading recorded with
``labgpu gpu record FILE`` on a real GPU host (or written by hand); it subclasses the
real interface so code under test cannot tell, except that the data never changes.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from labgpu.gpu.nvml import GpuProcessSample, GpuSource, NvmlReading, NvmlUnavailable


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


# A day of varied load ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeJob:
    """One made-up GPU job of :class:`ReplayedDay`: a member's process on one GPU from minute ``start``
    (inclusive) to ``end`` (exclusive) of the day."""

    member: str
    gpu: int
    start: int
    end: int
    memory_mib: int
    utilization: int
    pid: int  # on the host
    container_pid: int  # inside the member's container


class ReplayedDay(GpuSource):
    """FAKE: a GPU host through one day (1440 minutes) of varied load, made up from a seed.

    The GPUs are copies of the first GPU of a recording (tests/fixtures/gpu/nvml/four-gpus.json), so the
    model, driver and memory are a real host's. ``members`` each run a few jobs a day on one to three
    GPUs, from ten minutes to ten hours, some busy and some idle, overlapping each other; a host process
    (Xorg) sits on GPU 0 all day. Set :attr:`minute`, then :meth:`read` answers what NVML would show
    then. :meth:`write_proc` makes the fake /proc that attributes each process to its member's container
    (named like the member); :meth:`gpu_seconds` is what the usage history must count, by construction.
    """

    DAY_MINUTES = 1440
    XORG_PID = 999

    def __init__(
        self, base: NvmlReading, *, gpus: int = 8, members: Sequence[str] = (), seed: int = 17
    ) -> None:
        template = base.gpus[0]
        self.base = base
        self.gpus = tuple(
            replace(
                template,
                index=i,
                uuid=f"GPU-{seed:04d}{i:04d}-0000-4000-8000-{i:012d}",
                pci_bus_id=f"00000000:{0x10 + i:02X}:00.0",
                processes=(),
                error=None,
                mig_enabled=None,
            )
            for i in range(gpus)
        )
        self.members = tuple(members) or tuple(f"m{n:02d}" for n in range(1, 21))
        self.minute = 0
        self.jobs = self._schedule(random.Random(seed))  # noqa: S311 - made-up load, not a secret
        self.reads = 0

    def _schedule(self, rng: random.Random) -> tuple[FakeJob, ...]:
        jobs: list[FakeJob] = []
        for member in self.members:
            for _ in range(rng.randint(1, 4)):
                start = rng.randrange(0, self.DAY_MINUTES - 10)
                end = min(self.DAY_MINUTES, start + rng.choice((10, 45, 90, 240, 600)) + rng.randrange(30))
                busy = rng.random() < 0.7
                for gpu in rng.sample(range(len(self.gpus)), rng.randint(1, 3)):
                    n = len(jobs)
                    jobs.append(
                        FakeJob(
                            member=member,
                            gpu=gpu,
                            start=start,
                            end=end,
                            memory_mib=rng.randrange(512, 40960),
                            utilization=rng.randrange(40, 100) if busy else rng.randrange(0, 4),
                            pid=20000 + n,
                            container_pid=100 + n,
                        )
                    )
        return tuple(jobs)

    def running(self, minute: int | None = None) -> list[FakeJob]:
        at = self.minute if minute is None else minute
        return [j for j in self.jobs if j.start <= at < j.end]

    def read(self) -> NvmlReading:
        self.reads += 1
        running = self.running()
        gpus = []
        for g in self.gpus:
            mine = [j for j in running if j.gpu == g.index]
            processes = [GpuProcessSample(j.pid, j.memory_mib * 2**20) for j in mine]
            if g.index == 0:
                processes.append(GpuProcessSample(self.XORG_PID, 64 * 2**20, "compute+graphics"))
            gpus.append(
                replace(
                    g,
                    memory_used=sum(p.used_memory or 0 for p in processes),
                    utilization=max((j.utilization for j in mine), default=0),
                    processes=tuple(processes),
                )
            )
        return replace(self.base, gpus=tuple(gpus))

    def write_proc(self, root: Path) -> Path:
        """The fake /proc of every process of the day: each job's in its member's container (cgroup v2,
        liblxc 4+ layout), with its pid inside the container; Xorg on the host."""
        for j in self.jobs:
            d = root / str(j.pid)
            d.mkdir(parents=True, exist_ok=True)
            (d / "cgroup").write_text(f"0::/lxc.payload.{j.member}/.lxc\n")
            (d / "comm").write_text("python3\n")
            (d / "status").write_text(f"Name:\tpython3\nNSpid:\t{j.pid}\t{j.container_pid}\n")
        xorg = root / str(self.XORG_PID)
        xorg.mkdir(parents=True, exist_ok=True)
        (xorg / "cgroup").write_text("0::/system.slice/display-manager.service\n")
        (xorg / "comm").write_text("Xorg\n")
        return root

    def gpu_seconds(self, interval: int = 60, minutes: Iterable[int] | None = None) -> dict[str, int]:
        """Each member's GPU time over ``minutes`` (default: the whole day) sampled every ``interval``
        seconds: a member on a GPU in a minute counts once, however many of their processes run there."""
        out: dict[str, int] = {}
        for minute in range(self.DAY_MINUTES) if minutes is None else minutes:
            for member, _gpu in {(j.member, j.gpu) for j in self.running(minute)}:
                out[member] = out.get(member, 0) + interval
        return out
