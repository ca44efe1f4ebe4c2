"""Options and small helpers that several command groups share: --json, --yes, the hidden --now and
--replay, and how times are read and shown.

Times are read and shown in this machine's local time zone unless they carry their own
(``2026-03-02T14:00+08:00``).
"""

from __future__ import annotations

import sys
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Annotated

import typer

from labgpu.domain.bookings import parse_time
from labgpu.errors import BadInput
from labgpu.store.models import utcnow

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
# Hidden, for tests and demos on hosts without a GPU: the clock, and the host's GPUs from a recording.
NowOpt = Annotated[str | None, typer.Option("--now", hidden=True)]
ReplayOpt = Annotated[Path | None, typer.Option("--replay", hidden=True, exists=True, dir_okay=False)]


def confirm(message: str, *, yes: bool) -> None:
    """Ask before a destructive step; without a terminal, --yes is required (exit 2 otherwise)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise BadInput(f"{message} Refusing without a terminal to ask on: add --yes to confirm")
    typer.confirm(message, abort=True)


def local_tz() -> tzinfo:
    from labgpu.services.gpus import local_tz as machine_tz

    return machine_tz()


def clock(now: str | None) -> datetime:
    """The current time, or the hidden ``--now`` (ISO 8601; without a zone: local time)."""
    if now is None:
        return utcnow()
    return parse_time(now, now=utcnow(), tz=local_tz())


def show_time(moment: datetime) -> str:
    return moment.astimezone(local_tz()).strftime("%Y-%m-%d %H:%M %Z").strip()
