"""The bookings board: every GPU of the hosts in booked mode, by the hours of one day, and who holds it.

Rows are GPUs (those the host lists, see :meth:`~labgpu.services.gpus._usage.GpuUsageReader.bookable_gpus`,
and any GPU a booking names); columns are the day's hours in the portal's time zone (23 or 25 on the days
the clocks change). A run of hours with the same bookings is one cell, so a booking from 14:00 to 18:00
reads as one block. Bookings that hold GPUs (pending, approved, active) and those that ran (ended) are
shown; cancelled and rejected ones are not.

Everyone signed in sees the whole board: who holds which GPU is no secret in a lab (the notes are: they
are not on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu.services.context import Services
from labgpu.services.gpus._booking_records import HOLDING, parse_gpus
from labgpu.services.gpus._usage import BookableGpu, GpuUsageReader
from labgpu.services.hosts import ask_all
from labgpu.store.models import Booking, BookingStatus, GpuMode, Host

HOUR = timedelta(hours=1)
SHOWN = (*HOLDING, BookingStatus.ENDED)


@dataclass(frozen=True)
class BoardEntry:
    """A booking as the board shows it."""

    id: int
    member: str
    start: datetime
    end: datetime
    status: str


@dataclass(frozen=True)
class BoardCell:
    """``span`` hours from ``start`` with the same bookings (none: free)."""

    start: datetime
    span: int
    entries: tuple[BoardEntry, ...]

    @property
    def free(self) -> bool:
        return not self.entries


@dataclass(frozen=True)
class BoardRow:
    host: str
    gpu: int
    name: str  # the GPU's model, when known
    cells: tuple[BoardCell, ...]


@dataclass(frozen=True)
class Board:
    """One day of the board."""

    day: date
    tz: tzinfo
    columns: tuple[datetime, ...]  # the start of each hour (aware, UTC)
    rows: tuple[BoardRow, ...]
    hosts: tuple[str, ...]  # hosts in booked mode
    gpus: dict[str, list[BookableGpu]]  # host -> its GPUs, for the booking form
    notes: tuple[str, ...]  # hosts whose GPUs could not be listed

    @property
    def start(self) -> datetime:
        return self.columns[0]

    @property
    def end(self) -> datetime:
        return self.columns[-1] + HOUR


def day_columns(day: date, tz: tzinfo) -> tuple[datetime, ...]:
    """The starts of the hours of ``day`` in ``tz``, as UTC moments (stepped in UTC, so a day with a
    clock change has 23 or 25)."""
    start = datetime.combine(day, time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    out = []
    at = start
    while at < end:
        out.append(at)
        at += HOUR
    return tuple(out)


def layout_row(columns: Sequence[datetime], entries: Sequence[BoardEntry]) -> tuple[BoardCell, ...]:
    """The cells of one GPU's row: consecutive hours touched by the same bookings merged into one."""
    cells: list[BoardCell] = []
    for at in columns:
        here = tuple(e for e in entries if e.start < at + HOUR and e.end > at)
        if cells and cells[-1].entries == here:
            last = cells[-1]
            cells[-1] = BoardCell(last.start, last.span + 1, here)
        else:
            cells.append(BoardCell(at, 1, here))
    return tuple(cells)


def booked_hosts(svc: Services) -> list[Host]:
    """The hosts in booked mode, by name."""
    with svc.session() as session:
        return list(session.scalars(select(Host).where(Host.gpu_mode == GpuMode.BOOKED).order_by(Host.name)))


def read_board(svc: Services, reader: GpuUsageReader, *, day: date, tz: tzinfo) -> Board:
    """The board of ``day`` in ``tz``. Asks each host in booked mode for its GPUs at once (a host that
    does not answer in time is a note, its booked GPUs still rows); reads the bookings from the store."""
    columns = day_columns(day, tz)
    hosts = booked_hosts(svc)
    answers = ask_all(
        {h.name: partial(reader.bookable_gpus, svc, h) for h in hosts}, timeout=svc.settings.host_timeout + 1
    )
    gpus = {name: list(a.value or []) for name, a in answers.items()}
    notes = [f"{name}: {a.error}" for name, a in answers.items() if a.error]
    notes += [f"{name}: no GPU is listed" for name, a in answers.items() if not a.error and not a.value]
    entries = _entries(svc, [h.id for h in hosts], columns[0], columns[-1] + HOUR)
    rows = []
    for h in hosts:
        names = {g.index: g.name for g in gpus[h.name]}
        indexes = sorted(set(names) | {i for (host_id, i) in entries if host_id == h.id})
        for index in indexes:
            cells = layout_row(columns, entries.get((h.id, index), []))
            rows.append(BoardRow(h.name, index, names.get(index, ""), cells))
    return Board(
        day=day,
        tz=tz,
        columns=columns,
        rows=tuple(rows),
        hosts=tuple(h.name for h in hosts),
        gpus=gpus,
        notes=tuple(notes),
    )


def _entries(
    svc: Services, host_ids: list[int], start: datetime, end: datetime
) -> dict[tuple[int, int], list[BoardEntry]]:
    """(host id, GPU) -> the bookings shown on the board between ``start`` and ``end``."""
    out: dict[tuple[int, int], list[BoardEntry]] = {}
    if not host_ids:
        return out
    with svc.session() as session:
        rows = session.scalars(
            select(Booking)
            .options(selectinload(Booking.member))
            .where(
                Booking.host_id.in_(host_ids),
                Booking.status.in_(SHOWN),
                Booking.start_at < end,
                Booking.end_at > start,
            )
            .order_by(Booking.start_at, Booking.id)
        ).all()
        for row in rows:
            entry = BoardEntry(row.id, row.member.name, row.start_at, row.end_at, str(row.status))
            for gpu in parse_gpus(row.gpus):
                out.setdefault((row.host_id, gpu), []).append(entry)
    return out
