"""The bookings board's grid (hours of a day in a time zone, bookings merged into blocks) and reading an
agent's answer into typed GPU usage: pure, no store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from labgpu.services.gpus._board import BoardEntry, day_columns, layout_row
from labgpu.services.gpus._usage import AgentAnswerError, parse_inventory
from labgpu.store.models import Host, HostKind

H = timedelta(hours=1)
SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_a_day_has_24_hours_from_local_midnight() -> None:
    columns = day_columns(date(2026, 3, 2), SHANGHAI)
    assert len(columns) == 24
    assert columns[0] == datetime(2026, 3, 1, 16, 0, tzinfo=UTC)  # 00:00 in Shanghai
    assert all(b - a == H for a, b in pairwise(columns))


@pytest.mark.parametrize(("day", "hours"), [(date(2026, 3, 29), 23), (date(2026, 10, 25), 25)])
def test_days_when_the_clocks_change(day: date, hours: int) -> None:
    assert len(day_columns(day, ZoneInfo("Europe/Berlin"))) == hours


def _entry(n: int, start: datetime, end: datetime, member: str = "alice") -> BoardEntry:
    return BoardEntry(n, member, start, end, "approved")


def test_a_booking_is_one_block_and_free_hours_merge() -> None:
    columns = day_columns(date(2026, 3, 2), UTC)
    t0 = columns[0]
    alice = _entry(1, t0 + 14 * H, t0 + 18 * H)
    cells = layout_row(columns, [alice])
    assert [(c.start.hour, c.span, c.entries) for c in cells] == [
        (0, 14, ()),
        (14, 4, (alice,)),
        (18, 6, ()),
    ]
    assert cells[0].free and not cells[1].free


def test_partial_hours_and_two_bookings_in_one_hour() -> None:
    columns = day_columns(date(2026, 3, 2), UTC)
    t0 = columns[0]
    alice = _entry(1, t0 + 9 * H + timedelta(minutes=15), t0 + 10 * H + timedelta(minutes=30))
    bob = _entry(2, t0 + 10 * H + timedelta(minutes=30), t0 + 12 * H, "bob")
    cells = layout_row(columns, [alice, bob])
    spans = [(c.start.hour, c.span, tuple(e.member for e in c.entries)) for c in cells]
    assert spans == [
        (0, 9, ()),
        (9, 1, ("alice",)),
        (10, 1, ("alice", "bob")),
        (11, 1, ("bob",)),
        (12, 12, ()),
    ]


def test_a_booking_over_several_days_fills_the_day() -> None:
    columns = day_columns(date(2026, 3, 2), UTC)
    long = _entry(1, columns[0] - 30 * H, columns[0] + 48 * H)
    (cell,) = layout_row(columns, [long])
    assert cell.span == 24 and cell.entries == (long,)


HOST = Host(id=1, name="gpu9", url=None, kind=HostKind.LXD, gpu_mode="booked")


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"gpus": "none"},
        {"gpus": [{"name": "no index"}]},
        {"gpus": [{"index": 0, "utilization": "lots"}]},
        {"gpus": [{"index": 0, "processes": [{"command": "no pid"}]}]},
    ],
)
def test_what_is_not_an_inventory_is_refused(answer: object) -> None:
    with pytest.raises(AgentAnswerError, match="not an inventory"):
        parse_inventory(answer, host=HOST, source="agent")


def test_an_inventory_without_gpus_says_why() -> None:
    found = parse_inventory(
        {"available": False, "reason": "no NVIDIA GPU on this host (no driver)", "gpus": []},
        host=HOST,
        source="agent",
    )
    assert not found.available and found.message == "no NVIDIA GPU on this host (no driver)"
    process = (
        parse_inventory(
            {
                "available": True,
                "gpus": [
                    {
                        "index": 0,
                        "processes": [
                            {
                                "pid": 7,
                                "where": "container",
                                "container": "x",
                                "project": "lab",
                                "used_memory": 5,
                            }
                        ],
                    }
                ],
            },
            host=HOST,
            source="agent",
        )
        .gpus[0]
        .processes[0]
    )
    assert (process.container, process.member, process.memory) == ("lab/x", None, 5)
