"""JSON API: who uses which GPU, and GPU bookings.

Everyone signed in sees every host's GPUs and their processes. Bookings: a member books, lists, cancels
and extends their own (another member's booking is answered 404, like one that does not exist); an admin
does so for anyone, and approves or rejects. The rules and the audit log are
:mod:`labgpu.services.gpus._bookings`'s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from labgpu.domain.members import validate_member_name
from labgpu.services import gpus
from labgpu.services.gpus import BookingView
from labgpu.web.deps import AdminRequired, CurrentMember, GpuUsageDep, ServicesDep
from labgpu.web.schemas import ERROR_RESPONSES
from labgpu.web.schemas_gpus import (
    BookingCancelled,
    BookingCreate,
    BookingExtend,
    BookingOut,
    BookingReject,
    FreeRequestCreate,
    FreeRequestOut,
    HostGpusOut,
)

router = APIRouter(prefix="/api/v1", tags=["gpus"], responses=ERROR_RESPONSES)
BookingId = Annotated[int, Path(ge=1, le=2**53, description="The booking's id.")]
RequestId = Annotated[int, Path(ge=1, le=2**53, description="The request's id.")]


def _out(view: BookingView, **extra: Any) -> dict[str, Any]:
    return {**view.as_dict(), **extra}


@router.get("/gpus", response_model=list[HostGpusOut])
def list_gpus(_: CurrentMember, svc: ServicesDep, reader: GpuUsageDep) -> list[HostGpusOut]:
    """Every host's GPUs now: utilization, memory, processes with their member and container, who holds
    each GPU (active bookings, assignments) and which held GPUs are idle. A host whose agent cannot be
    reached, or that has no GPU, has ``available: false`` and a ``message``; it never fails the answer."""
    return [HostGpusOut.model_validate(h.as_dict()) for h in reader.read(svc)]


@router.get("/bookings", response_model=list[BookingOut])
def list_bookings(
    _: CurrentMember,
    svc: ServicesDep,
    include_all: Annotated[
        bool, Query(alias="all", description="Also ended, cancelled and rejected bookings.")
    ] = False,
    member: Annotated[str | None, Query(max_length=64, description="Only this member's (admins).")] = None,
) -> list[BookingOut]:
    """Bookings by start: the caller's own (an admin: everyone's) that hold GPUs (pending, approved,
    active), or with ``all=1`` past ones too."""
    if member:
        validate_member_name(member)
    views = gpus.list_bookings(svc, member=member or None, include_all=include_all)
    return [BookingOut.model_validate(_out(v)) for v in views]


@router.post("/bookings", response_model=BookingOut, status_code=201)
def create_booking(
    body: BookingCreate, identity: CurrentMember, svc: ServicesDep, reader: GpuUsageDep
) -> BookingOut:
    """Book GPUs on the member's host (in booked mode) from ``from`` to ``until``, rounded to whole slots.
    ``gpus`` is a count (free GPUs are picked) or a list of indexes. Pending when bookings need approval.
    Refusals name the rule: 409 for a clash or no free GPU, 403 for a quota, 400 for a bad time."""
    member = body.member or identity.name  # the service refuses a member booking for someone else
    if isinstance(body.gpus, int):
        choice = gpus.gpu_choice(count=body.gpus)
    else:
        choice = gpus.gpu_choice(indexes=body.gpus)
    view = gpus.request_booking(
        svc, reader, member=member, gpus=choice, start=body.start, until=body.until, note=body.note
    )
    return BookingOut.model_validate(_out(view))


@router.get("/bookings/{booking_id}", response_model=BookingOut)
def show_booking(booking_id: BookingId, _: CurrentMember, svc: ServicesDep) -> BookingOut:
    """One booking (the caller's own; an admin: anyone's)."""
    return BookingOut.model_validate(_out(gpus.get_booking(svc, booking_id)))


@router.post("/bookings/{booking_id}/cancel", response_model=BookingCancelled)
def cancel_booking(booking_id: BookingId, _: CurrentMember, svc: ServicesDep) -> BookingCancelled:
    """Cancel a booking; one that has started ends now and its GPUs are detached."""
    done = gpus.cancel_booking(svc, booking_id)
    return BookingCancelled.model_validate(
        _out(done.booking, ended_early=done.ended_early, detach=done.note or None)
    )


@router.post("/bookings/{booking_id}/extend", response_model=BookingOut)
def extend_booking(
    booking_id: BookingId, body: BookingExtend, _: CurrentMember, svc: ServicesDep
) -> BookingOut:
    """Move a booking's end later (``+2h``: after its current end), checked like a new booking."""
    view = gpus.request_extension(svc, booking_id, until=body.until)
    return BookingOut.model_validate(_out(view))


@router.post("/bookings/{booking_id}/approve", response_model=BookingOut)
def approve_booking(booking_id: BookingId, _: AdminRequired, svc: ServicesDep) -> BookingOut:
    """Approve a pending booking; the member is mailed. Admins only."""
    return BookingOut.model_validate(_out(gpus.approve(svc, booking_id)))


@router.post("/bookings/{booking_id}/reject", response_model=BookingOut)
def reject_booking(
    booking_id: BookingId, body: BookingReject, _: AdminRequired, svc: ServicesDep
) -> BookingOut:
    """Reject a pending booking, freeing its GPUs; the member is mailed the reason. Admins only."""
    return BookingOut.model_validate(_out(gpus.reject_booking(svc, booking_id, reason=body.reason)))


@router.get("/gpu-free-requests", response_model=list[FreeRequestOut])
def list_free_requests(
    _: CurrentMember,
    svc: ServicesDep,
    include_all: Annotated[
        bool, Query(alias="all", description="Also sent, expired and cancelled requests.")
    ] = False,
    member: Annotated[str | None, Query(max_length=64, description="Only this member's (admins).")] = None,
) -> list[FreeRequestOut]:
    """Requests to be told when GPUs are free, newest first: the caller's own (an admin: everyone's),
    waiting ones unless ``all=1``."""
    if member:
        validate_member_name(member)
    views = gpus.list_free_requests(svc, member=member or None, include_all=include_all)
    return [FreeRequestOut.model_validate(v.as_dict()) for v in views]


@router.post("/gpu-free-requests", response_model=FreeRequestOut, status_code=201)
def create_free_request(body: FreeRequestCreate, identity: CurrentMember, svc: ServicesDep) -> FreeRequestOut:
    """Be told once (through the member's notification channels: mail, webhooks) when ``count`` GPUs are
    free on ``host`` (default: the member's host): nobody holds them and they were idle for
    gpu_free_minutes. Ends when told, at its expiry, or when cancelled. 409 when one already waits there."""
    view = gpus.ask_when_free(
        svc, member=body.member or identity.name, count=body.count, host=body.host, hours=body.hours
    )
    return FreeRequestOut.model_validate(view.as_dict())


@router.post("/gpu-free-requests/{request_id}/cancel", response_model=FreeRequestOut)
def cancel_free_request(request_id: RequestId, _: CurrentMember, svc: ServicesDep) -> FreeRequestOut:
    """Cancel a waiting request (the caller's own; an admin: anyone's)."""
    return FreeRequestOut.model_validate(gpus.cancel_free_request(svc, request_id).as_dict())
