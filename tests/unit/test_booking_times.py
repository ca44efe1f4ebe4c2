"""Pure helpers around bookings: slots, times as people type them, --gpus, and the GPU devices a
booking attaches (PCI address or CDI id) with the config each passthrough needs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labgpu.domain.bookings import (
    align_window,
    ceil_to_slot,
    floor_to_slot,
    parse_duration,
    parse_gpu_choice,
    parse_time,
    slot_starts,
)
from labgpu.domain.gpus import booked_device_index, booked_devices, gpu_device, passthrough_config
from labgpu.errors import BadInput
from labgpu.services.gpus._attach import explain_refusal

NOW = datetime(2026, 3, 2, 9, 7, 30, tzinfo=UTC)
Q = timedelta(minutes=15)
BEIJING = timezone(timedelta(hours=8))


def test_slots() -> None:
    assert floor_to_slot(NOW, Q) == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert ceil_to_slot(NOW, Q) == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    assert ceil_to_slot(datetime(2026, 3, 2, 9, 15, tzinfo=UTC), Q) == datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    # The same moment in another zone falls in the same slot.
    assert floor_to_slot(NOW.astimezone(BEIJING), Q) == floor_to_slot(NOW, Q)
    starts = slot_starts(NOW, NOW + timedelta(minutes=40), Q)
    assert [s.strftime("%H:%M") for s in starts] == ["09:00", "09:15", "09:30", "09:45"]


@given(
    start=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
    ),
    length=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=8)),
    minutes=st.sampled_from([5, 10, 15, 20, 30, 60]),
)
def test_an_aligned_window_covers_the_request_with_whole_slots(
    start: datetime, length: timedelta, minutes: int
) -> None:
    slot = timedelta(minutes=minutes)
    lo, hi = align_window(start, start + length, slot)
    assert lo <= start and start + length <= hi
    assert start - lo < slot and hi - (start + length) < slot
    assert lo.minute % minutes == 0 and lo.second == 0 and lo.microsecond == 0
    assert len(slot_starts(lo, hi, slot)) == (hi - lo) / slot


def test_times_as_people_type_them() -> None:
    assert parse_time("now", now=NOW, tz=BEIJING) == NOW
    assert parse_time("+90m", now=NOW, tz=BEIJING) == NOW + timedelta(minutes=90)
    assert parse_time("+1h30m", now=NOW, tz=BEIJING, base=NOW + timedelta(hours=1)) == NOW + timedelta(
        hours=2.5
    )
    assert parse_time("18:00", now=NOW, tz=BEIJING) == datetime(2026, 3, 2, 18, 0, tzinfo=BEIJING)
    assert parse_time("2026-03-04 14:00", now=NOW, tz=BEIJING) == datetime(2026, 3, 4, 6, 0, tzinfo=UTC)
    assert parse_time("2026-03-04T14:00Z", now=NOW, tz=BEIJING) == datetime(2026, 3, 4, 14, 0, tzinfo=UTC)
    assert parse_time("2026-03-04", now=NOW, tz=UTC) == datetime(2026, 3, 4, tzinfo=UTC)
    for bad in ("tomorrow", "25:00", "+", "+2x", "+0h", "2026-13-01"):
        with pytest.raises(BadInput):
            parse_time(bad, now=NOW, tz=UTC)
    assert parse_duration("1w 2d") == timedelta(days=9)


def test_gpu_choice() -> None:
    assert parse_gpu_choice("2") == (2, ())
    assert parse_gpu_choice("0,2") == (None, (0, 2))
    assert parse_gpu_choice("3,") == (None, (3,))
    assert parse_gpu_choice(" 2, 0 ,2") == (None, (0, 2))
    for bad in ("0", "", "a", "0-2", ",", "-1,"):
        with pytest.raises(BadInput):
            parse_gpu_choice(bad)


def test_booked_devices_by_pci_address_or_cdi_id() -> None:
    gpus = {0: "0000:1b:00.0", 1: "0000:3b:00.0"}
    devices, missing = booked_devices([1, 0, 5], gpus, "none")
    assert devices == {
        "booked-gpu0": {"type": "gpu", "gputype": "physical", "pci": "0000:1b:00.0"},
        "booked-gpu1": {"type": "gpu", "gputype": "physical", "pci": "0000:3b:00.0"},
    }
    assert missing == [5]
    assert gpu_device(1, "0000:3b:00.0", "cdi") == {
        "type": "gpu",
        "gputype": "physical",
        "id": "nvidia.com/gpu=1",
    }
    assert passthrough_config("nvidia-runtime") == {"nvidia.runtime": "true"}
    assert passthrough_config("cdi") == passthrough_config("none") == {}
    assert booked_device_index("booked-gpu12") == 12
    assert booked_device_index("labgpu-gpu1") is None and booked_device_index("booked-gpu") is None


def test_the_daemons_refusals_in_plain_words() -> None:
    lxd = 'update instance a: Failed to start device "booked-gpu3": Invalid PCI address (no device found): 0000:b1:00.0'
    assert explain_refusal(lxd).startswith("the daemon cannot find that GPU on the host (")
    assert explain_refusal("Failed to detect requested GPU device").startswith(
        "the daemon cannot find that GPU"
    )
    tools = "Initialize LXC: The NVIDIA container tools couldn't be found"
    assert "needs nvidia-container-cli on the host" in explain_refusal(tools)
    assert explain_refusal("something else") == "something else"


def test_auto_passthrough_prefers_cdi_then_the_nvidia_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from labgpu.services.gpus import _attach as gpu_attach

    def svc(extensions: set[str], setting: str = "auto") -> object:
        info = SimpleNamespace(has=lambda e: e in extensions)
        return SimpleNamespace(
            settings=SimpleNamespace(gpu_passthrough=setting), runtime=SimpleNamespace(server=lambda: info)
        )

    monkeypatch.setattr(gpu_attach.shutil, "which", lambda name: None)
    assert gpu_attach.passthrough(svc({"gpu_cdi"})) == "cdi"  # type: ignore[arg-type]
    assert gpu_attach.passthrough(svc(set())) == "none"  # type: ignore[arg-type]
    monkeypatch.setattr(gpu_attach.shutil, "which", lambda name: "/usr/bin/nvidia-container-cli")
    assert gpu_attach.passthrough(svc(set())) == "nvidia-runtime"  # type: ignore[arg-type]
    assert gpu_attach.passthrough(svc({"gpu_cdi"}, setting="none")) == "none"  # type: ignore[arg-type]


@pytest.fixture
def machine_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets the machine's zone (TZ) for local_tz(), which reads it once per process (tzlocal)."""
    import tzlocal

    def use(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        tzlocal.reload_localzone()

    yield use
    monkeypatch.undo()
    tzlocal.reload_localzone()


def test_the_machines_zone_keeps_its_daylight_saving_rules(machine_zone: Callable[[str], None]) -> None:
    """A booking typed in winter for a summer day is read with the summer offset; the day the clocks
    go forward has 23 hours on the board."""
    from labgpu.services.gpus._board import day_columns
    from labgpu.services.gpus._booking_requests import local_tz

    machine_zone("Europe/Berlin")
    tz = local_tz()
    winter = datetime(2026, 1, 10, 9, 0, tzinfo=UTC)
    assert parse_time("2026-07-01 10:00", now=winter, tz=tz) == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert parse_time("2026-01-11 10:00", now=winter, tz=tz) == datetime(2026, 1, 11, 9, 0, tzinfo=UTC)
    assert len(day_columns(date(2026, 3, 29), tz)) == 23
    machine_zone("Asia/Shanghai")  # no daylight saving
    assert parse_time("2026-07-01 10:00", now=winter, tz=local_tz()) == datetime(2026, 7, 1, 2, 0, tzinfo=UTC)


def test_an_unknown_tz_falls_back_to_the_offset_in_force() -> None:
    code = "from labgpu.services.gpus._booking_requests import local_tz; print(local_tz().utcoffset(None))"
    env = {**os.environ, "TZ": "Nowhere/Atlantis"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0:00:00"  # glibc reads an unknown TZ as UTC
