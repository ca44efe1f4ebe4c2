"""JSON API: the audit log (read only, admins only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from labgpu.services import portal
from labgpu.web.deps import AdminRequired, ServicesDep
from labgpu.web.schemas import ERROR_RESPONSES, AuditOut

router = APIRouter(prefix="/api/v1", tags=["audit"], responses=ERROR_RESPONSES)


@router.get("/audit", response_model=list[AuditOut])
def list_audit(
    _: AdminRequired,
    svc: ServicesDep,
    actor: Annotated[str | None, Query(max_length=64)] = None,
    action: Annotated[
        str | None, Query(max_length=64, description="Exact, or a prefix ending in . or *")
    ] = None,
    target: Annotated[str | None, Query(max_length=255)] = None,
    source_address: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[datetime | None, Query(description="From this time on (with a time zone).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (with a time zone).")] = None,
    before_id: Annotated[int | None, Query(description="Paging: entries older than this id.")] = None,
    limit: Annotated[int, Query(ge=1, le=portal.MAX_PAGE)] = 100,
) -> list[AuditOut]:
    """Audit entries, newest first, filtered by every parameter given."""
    entries = portal.list_events(
        svc,
        actor=actor,
        action=action,
        target=target,
        source_address=source_address,
        since=since,
        until=until,
        before_id=before_id,
        limit=limit,
    )
    return [AuditOut(**e.as_dict()) for e in entries]
