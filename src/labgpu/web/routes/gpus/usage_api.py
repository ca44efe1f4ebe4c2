"""JSON API: GPU usage history and fair-use actions.

A member reads their own usage and fair-use actions (asking for another member's answers 404, word for
word as for a member that does not exist); an admin reads everyone's. The figures are
:func:`labgpu.services.gpus.usage_report`'s, the same the CLI and the pages show."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from labgpu.services import gpus
from labgpu.web.deps import CurrentMember, ServicesDep, check_member_access
from labgpu.web.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["gpus"], responses=ERROR_RESPONSES)


@router.get("/usage")
def usage(
    identity: CurrentMember,
    svc: ServicesDep,
    since: Annotated[str, Query(max_length=16, description="How far back: 24h, 7d, 4w.")] = "7d",
    by: Annotated[str, Query(max_length=8, description="Group by member, gpu or host.")] = "member",
    member: Annotated[str | None, Query(max_length=64, description="Only this member's (admins).")] = None,
) -> dict[str, Any]:
    """GPU-hours, memory held and mean utilization per member, GPU or host over ``since`` (to the whole
    hour), with a series per row over time (days; hours for two days or less). A member gets their own
    usage only."""
    if not identity.is_admin:
        member = check_member_access(identity, member or identity.name)
    elif member:
        member = check_member_access(identity, member)
    report = gpus.usage_report(svc, since=since, by=by, member=member or None, tz=gpus.local_tz())
    return report.as_dict()


@router.get("/usage/events")
def usage_events(
    identity: CurrentMember,
    svc: ServicesDep,
    member: Annotated[str | None, Query(max_length=64, description="Only this member's (admins).")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many, newest first.")] = 50,
) -> list[dict[str, Any]]:
    """Fair-use actions (a limit reached and who was told; processes stopped), newest first, each with
    its reason. A member gets their own."""
    if not identity.is_admin:
        member = check_member_access(identity, member or identity.name)
    elif member:
        member = check_member_access(identity, member)
    return [e.as_dict() for e in gpus.fair_use_events(svc, member=member or None, limit=limit)]
