"""`labgpu gpu book` and friends refusing bad input: one clear line, exit 2, nothing written.

The real CLI runs as a subprocess on a store the test fills (a host in booked mode, two members); the
clock is given with the hidden --now and the host's GPUs come from a recorded NVML reading (--replay),
as this machine has none. No daemon is needed: the runtime points at a socket that does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from labgpu.settings import load_settings
from labgpu.store import create_engine_for, session_factory, upgrade
from labgpu.store.models import Booking, BookingSlot, Host, HostKind, Member

LABGPU = [sys.executable, "-m", "labgpu.cli"]
RECORDING = str(Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "nvml" / "four-gpus.json")
NOW = "2026-03-02T09:00:00+00:00"


class Lab:
    def __init__(self, tmp: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
        self.env.update(
            LABGPU_STATE_DIR=str(tmp / "state"),
            LABGPU_RUNTIME_URL=f"unix://{tmp}/no-daemon.socket",
            LABGPU_BOOKING_MAX_GPU_HOURS_PER_WEEK="10",
            TZ="UTC",
        )
        settings = load_settings(state_dir=tmp / "state")
        self.engine = create_engine_for(settings)
        upgrade(settings, engine=self.engine)
        with session_factory(self.engine).begin() as session:
            host = Host(name="gpu1", url=None, kind=HostKind.LXD, gpu_mode="booked")
            session.add(host)
            session.flush()
            for uid, name in ((70001, "alice"), (70002, "bob")):
                session.add(Member(name=name, uid=uid, host_id=host.id, container=name, gpu_spec="none"))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*LABGPU, *args], env=self.env, capture_output=True, text=True, timeout=120)

    def book(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run("gpu", "book", "--now", NOW, "--replay", RECORDING, *args)

    def counts(self) -> tuple[int, int]:
        with session_factory(self.engine)() as session:
            return (
                session.scalar(select(func.count()).select_from(Booking)) or 0,
                session.scalar(select(func.count()).select_from(BookingSlot)) or 0,
            )


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    made = Lab(tmp_path)
    yield made  # type: ignore[misc]
    made.engine.dispose()


def one_clear_line(r: subprocess.CompletedProcess[str], *needles: str, code: int = 2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout.strip() == ""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], r.stderr
    return lines[0]


def test_a_good_booking_then_every_bad_one(lab: Lab) -> None:
    r = lab.book("--gpus", "0,1", "--from", "10:00", "--until", "+4h", "--member", "alice", "--note", "ICML")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (
        "booking 1: GPU 0,1 on gpu1 for alice, 2026-03-02 10:00 UTC to 2026-03-02 14:00 UTC; "
        "approved: the GPUs are attached at its start"
    )
    before = lab.counts()
    assert before == (1, 32)

    line = one_clear_line(lab.book("--gpus", "1,2", "--from", "12:00", "--until", "+1h", "--member", "bob"))
    assert line == (
        "error: GPU 1 is booked by alice from 2026-03-02 10:00 UTC to 2026-03-02 14:00 UTC "
        "(fix: pick other GPUs or another time, or let labgpu pick free GPUs)"
    )
    one_clear_line(
        lab.book("--gpus", "2,", "--from", "2026-03-01 10:00", "--until", "+2h", "--member", "bob"),
        "the booking would end in the past (2026-03-01 12:00 UTC)",
    )
    one_clear_line(
        lab.book("--gpus", "2,", "--from", "08:00", "--until", "+2h", "--member", "bob"),
        "a booking cannot start in the past (2026-03-02 08:00 UTC)",
    )
    one_clear_line(
        lab.book("--gpus", "2,3", "--from", "15:00", "--until", "+2h", "--member", "alice"),
        "alice would have 12 GPU-hours booked in the 7 days from",
        "the limit is 10 in any 7 days",
    )
    one_clear_line(lab.book("--gpus", "2,", "--from", "2026-04-01 10:00", "--until", "+1h", "--member", "bob"),
                   "bookings may start at most 14 days ahead")  # fmt: skip
    one_clear_line(
        lab.book("--gpus", "9,", "--until", "+1h", "--member", "bob"),
        "host gpu1 has no GPU 9 (it has: 0, 1, 2, 3)",
    )
    one_clear_line(lab.book("--gpus", "0-3", "--until", "+1h", "--member", "bob"), "invalid --gpus '0-3'")
    one_clear_line(
        lab.book("--gpus", "1", "--until", "tomorrow", "--member", "bob"), "invalid time 'tomorrow'"
    )
    one_clear_line(
        lab.book("--gpus", "1", "--until", "+10m", "--member", "bob"), "a booking lasts at least 0:30:00"
    )
    one_clear_line(lab.book("--gpus", "3", "--from", "11:00", "--until", "+1h", "--member", "bob"),
                   "3 GPU(s) asked for, but only 2 free")  # fmt: skip
    one_clear_line(lab.book("--gpus", "1", "--until", "+1h", "--member", "zed"), "no member named zed")
    assert lab.counts() == before

    one_clear_line(lab.run("gpu", "cancel", "99"), "no booking 99")
    one_clear_line(lab.run("gpu", "approve", "1"), "booking 1 is approved, not pending", code=2)
    one_clear_line(lab.run("gpu", "extend", "1", "--until", "+9h", "--now", NOW), "GPU-hours")
    one_clear_line(lab.run("jobs", "run-once", "--job", "nope"), "unknown job 'nope'")

    listed = json.loads(lab.run("gpu", "bookings", "--json").stdout)
    assert [(b["id"], b["member"], b["gpus"], b["status"], b["note"]) for b in listed] == [
        (1, "alice", [0, 1], "approved", "ICML")
    ]
    r = lab.run("gpu", "cancel", "1", "--now", NOW)
    assert r.returncode == 0 and r.stdout.strip() == "booking 1 cancelled", r.stderr
    assert lab.counts() == (1, 0)
    assert json.loads(lab.run("gpu", "bookings", "--json").stdout) == []
    assert len(json.loads(lab.run("gpu", "bookings", "--all", "--json").stdout)) == 1


def test_bookings_outside_booked_mode_say_how_to_switch(lab: Lab) -> None:
    with session_factory(lab.engine).begin() as session:
        session.scalars(select(Host)).one().gpu_mode = "assigned"
    one_clear_line(
        lab.book("--gpus", "1", "--until", "+1h", "--member", "bob"),
        "host gpu1 is in assigned GPU mode",
        "(fix: switch with `labgpu gpu mode booked`)",
    )
    one_clear_line(lab.run("gpu", "mode", "exclusive"), "unknown GPU mode 'exclusive'")
    one_clear_line(lab.run("gpu", "assign", "bob", "all"), "give GPU indexes such as 0,1")
