"""Pages: GPU usage (every host's GPUs, their processes and holders; "tell me when N GPUs are free") and the bookings board (book, cancel,
extend; admins approve and reject). Every signed-in member sees both: who uses which GPU is no secret in a
lab. The rules, and who may change which booking, are :mod:`labgpu.services.gpus._bookings`'s."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse

from labgpu.errors import N_, BadInput
from labgpu.services import gpus as gpus_svc
from labgpu.services.context import Services
from labgpu.services.gpus import GpuUsageReader
from labgpu.services.portal import Identity
from labgpu.store.models import utcnow
from labgpu.web.deps import AdminRequired, CurrentMember, GpuUsageDep, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome
from labgpu.web.templating import Renderer

router = APIRouter(include_in_schema=False)
BookingId = Annotated[int, Path(ge=1, le=2**53)]
BOARD_DAYS = 7  # days linked from the board
TimeField = Annotated[str, Form(max_length=64)]
DayField = Annotated[str, Form(max_length=10)]

DONE = {
    "book": N_("Booking %(id)s was made: GPU %(gpus)s on %(host)s."),
    "pending": N_(
        "Booking %(id)s was requested: GPU %(gpus)s on %(host)s. An admin decides; you get an e-mail."
    ),
    "cancel": N_("Booking %(id)s was cancelled."),
    "end": N_("Booking %(id)s ended now; its GPUs are taken from the container."),
    "extend": N_("Booking %(id)s now ends %(end)s."),
    "approve": N_("Booking %(id)s was approved."),
    "reject": N_("Booking %(id)s was rejected."),
}


class Clock:
    """Times on these pages, in the portal machine's time zone (the one typed times are read in)."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz

    def local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)

    def full(self, moment: datetime | None) -> str:
        return self.local(moment).strftime("%Y-%m-%d %H:%M") if moment else "—"

    def hour(self, moment: datetime) -> str:
        return self.local(moment).strftime("%H")

    def short(self, moment: datetime, day: date) -> str:
        """``14:00`` on ``day``, else ``03-04 14:00``."""
        local = self.local(moment)
        return local.strftime("%H:%M") if local.date() == day else local.strftime("%m-%d %H:%M")

    @property
    def zone(self) -> str:
        now = datetime.now(self.tz)
        offset = now.strftime("%z")
        return f"{now.tzname() or ''} (UTC{offset[:3]}:{offset[3:]})".strip()


# GPU usage ----------------------------------------------------------------------------------------


def _gpus_page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    reader: GpuUsageReader,
    identity: Identity,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    hosts = reader.read(svc)
    clock = Clock(gpus_svc.local_tz())
    mine = gpus_svc.member_host(svc, identity.name)
    return renderer.render(
        request,
        "gpus.html",
        status_code,
        hosts=hosts,
        clock=clock,
        free_requests=gpus_svc.list_free_requests(svc, member=identity.name),
        my_host=mine.name if mine is not None else "",
        free_hours=svc.settings.gpu_free_request_hours,
        free_minutes=svc.settings.gpu_free_minutes,
        **extra,
    )


@router.get("/gpus")
def gpus_page(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
) -> HTMLResponse:
    return _gpus_page(request, renderer, svc, reader, identity)


@router.post("/gpus/notify-free")
def notify_free(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
    count: Annotated[str, Form(max_length=8)] = "",
    host: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    """Tell me (once) when ``count`` GPUs are free on ``host``."""
    with Outcome(request, renderer, error_field="free_error") as out:
        text = count.strip()
        if not text.isdigit():
            raise BadInput(N_("say how many GPUs"))
        view = gpus_svc.ask_when_free(svc, member=identity.name, count=int(text), host=host.strip() or None)
        out.done(
            N_("You will be told once when %(count)s GPU(s) are free on %(host)s (until %(until)s)."),
            {"count": view.count, "host": view.host, "until": Clock(gpus_svc.local_tz()).full(view.expires)},
        )
    return out.show(functools.partial(_gpus_page, request, renderer, svc, reader, identity))


@router.post("/gpus/notify-free/{request_id}/cancel")
def cancel_notify_free(
    request_id: BookingId,
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
) -> HTMLResponse:
    with Outcome(request, renderer, error_field="free_error") as out:
        view = gpus_svc.cancel_free_request(svc, request_id)
        out.done(N_("Request %(id)s was cancelled."), {"id": view.id})
    return out.show(functools.partial(_gpus_page, request, renderer, svc, reader, identity))


# The bookings board -------------------------------------------------------------------------------


def _day(text: str, today: date) -> date:
    text = text.strip()
    if not text:
        return today
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadInput(N_("day: give a date as YYYY-MM-DD")) from None


def _board_page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    reader: GpuUsageReader,
    identity: Identity,
    status_code: int = 200,
    *,
    day: date | None = None,
    form: dict[str, Any] | None = None,
    **extra: Any,
) -> HTMLResponse:
    clock = Clock(gpus_svc.local_tz())
    today = clock.local(utcnow()).date()
    day = day or today
    board = gpus_svc.read_board(svc, reader, day=day, tz=clock.tz)
    host = gpus_svc.member_host(svc, identity.name)
    listed = gpus_svc.list_bookings(svc)  # a member's own; an admin's: everyone's
    pending = [b for b in listed if b.status == "pending"] if identity.is_admin else []
    choices = board.gpus.get(host.name, []) if host is not None else []
    if identity.is_admin and not choices:
        seen: dict[int, Any] = {}
        for gpus in board.gpus.values():
            for g in gpus:
                seen.setdefault(g.index, g)
        choices = [seen[i] for i in sorted(seen)]
    return renderer.render(
        request,
        "bookings.html",
        status_code,
        board=board,
        clock=clock,
        today=today,
        days=[today + timedelta(days=n) for n in range(BOARD_DAYS)],
        prev_day=day - timedelta(days=1),
        next_day=day + timedelta(days=1),
        my_host=host,
        choices=choices,
        listed=[b for b in listed if b.status != "pending" or not identity.is_admin],
        pending=pending,
        form=form if form is not None else {"start": "now", "until": "+2h", "count": "1"},
        now=utcnow(),
        **extra,
    )


@dataclass(frozen=True)
class _Board:
    """The bookings board as an answer to one request: after an action, with its outcome."""

    request: Request
    renderer: Renderer
    svc: Services
    reader: GpuUsageReader
    identity: Identity

    def page(self, status_code: int = 200, **extra: Any) -> HTMLResponse:
        return _board_page(
            self.request, self.renderer, self.svc, self.reader, self.identity, status_code, **extra
        )

    def act(self, day: str, action: Callable[[], tuple[str, gpus_svc.BookingView]]) -> HTMLResponse:
        """Run a booking's action; show the board of the day the form came from with what happened."""
        with Outcome(self.request, self.renderer) as out:
            what, view = action()
            _done(out, what, view)
        return out.show(self.page, day=_shown_day(day))


def _done(out: Outcome, what: str, view: gpus_svc.BookingView) -> None:
    clock = Clock(gpus_svc.local_tz())
    values = {
        "id": view.id,
        "gpus": gpus_svc.format_gpus(view.gpus),
        "host": view.host,
        "end": clock.full(view.end),
    }
    out.done(DONE[what], values)


@router.get("/bookings")
def bookings_page(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
    day: str = "",
) -> HTMLResponse:
    today = Clock(gpus_svc.local_tz()).local(utcnow()).date()
    return _board_page(request, renderer, svc, reader, identity, day=_day(day[:10], today))


@router.post("/bookings")
def book(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
    count: Annotated[str, Form(max_length=8)] = "",
    gpu: Annotated[list[str], Form(max_length=64)] = [],  # noqa: B006 - FastAPI copies defaults
    start: TimeField = "now",
    until: TimeField = "",
    note: Annotated[str, Form(max_length=255)] = "",
    member: Annotated[str, Form(max_length=64)] = "",
) -> HTMLResponse:
    form = {"count": count, "gpu": gpu, "start": start, "until": until, "note": note, "member": member}
    with Outcome(request, renderer, error_field="form_error") as out:
        choice = _gpu_choice(count, gpu)
        view = gpus_svc.request_booking(
            svc,
            reader,
            member=member.strip() or identity.name,
            gpus=choice,
            start=start,
            until=until,
            note=note,
        )
        _done(out, "pending" if view.status == "pending" else "book", view)
    board = _Board(request, renderer, svc, reader, identity)
    if out.failed:
        return out.show(board.page, form=form)
    return out.show(board.page, day=Clock(gpus_svc.local_tz()).local(view.start).date())


def _gpu_choice(count: str, picked: list[str]) -> str:
    indexes = []
    for value in picked:
        if not value.strip().isdigit():
            raise BadInput(N_("pick GPUs from the list"))
        indexes.append(int(value))
    if indexes:
        return gpus_svc.gpu_choice(indexes=indexes)
    text = count.strip()
    if not text.isdigit() or int(text) < 1:
        raise BadInput(N_("say how many GPUs, or pick them"))
    return gpus_svc.gpu_choice(count=int(text))


@router.post("/bookings/{booking_id}/cancel")
def cancel(
    booking_id: BookingId,
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
    day: DayField = "",
) -> HTMLResponse:

    def action() -> tuple[str, gpus_svc.BookingView]:
        done = gpus_svc.cancel_booking(svc, booking_id)
        return ("end" if done.ended_early else "cancel"), done.booking

    return _Board(request, renderer, svc, reader, identity).act(day, action)


@router.post("/bookings/{booking_id}/extend")
def extend(
    booking_id: BookingId,
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
    until: TimeField = "",
    day: DayField = "",
) -> HTMLResponse:
    return _Board(request, renderer, svc, reader, identity).act(
        day, lambda: ("extend", gpus_svc.request_extension(svc, booking_id, until=until))
    )


@router.post("/bookings/{booking_id}/approve")
def approve(
    booking_id: BookingId,
    request: Request,
    identity: AdminRequired,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
    day: DayField = "",
) -> HTMLResponse:
    return _Board(request, renderer, svc, reader, identity).act(
        day, lambda: ("approve", gpus_svc.approve(svc, booking_id))
    )


@router.post("/bookings/{booking_id}/reject")
def reject(
    booking_id: BookingId,
    request: Request,
    identity: AdminRequired,
    svc: ServicesDep,
    reader: GpuUsageDep,
    renderer: RendererDep,
    reason: Annotated[str, Form(max_length=2000)] = "",
    day: DayField = "",
) -> HTMLResponse:
    return _Board(request, renderer, svc, reader, identity).act(
        day, lambda: ("reject", gpus_svc.reject_booking(svc, booking_id, reason=reason))
    )


def _shown_day(text: str) -> date | None:
    """The board's day a form came from (None: today); a bad one is ignored, the action still runs."""
    try:
        return date.fromisoformat(text.strip()) if text.strip() else None
    except ValueError:
        return None
