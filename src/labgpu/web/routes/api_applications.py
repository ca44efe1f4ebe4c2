"""JSON API: applications. Anyone may apply (throttled per address); admins list, approve and reject."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request

from labgpu.services import portal
from labgpu.web.deps import AdminRequired, ServicesDep
from labgpu.web.schemas import (
    ERROR_RESPONSES,
    ApplicationApprove,
    ApplicationCreate,
    ApplicationOut,
    ApplicationReceived,
    ApplicationReject,
)
from labgpu.web.security import client_address

router = APIRouter(prefix="/api/v1", tags=["applications"], responses=ERROR_RESPONSES)

RECEIVED = "application received: an admin will decide, and you will get an e-mail"


def _out(info: portal.ApplicationInfo) -> ApplicationOut:
    return ApplicationOut.model_validate(info.as_dict())


def worker(request: Request) -> portal.ProvisionWorker:
    found: portal.ProvisionWorker = request.app.state.worker
    return found


@router.post("/applications", response_model=ApplicationReceived, status_code=201)
def submit(
    body: ApplicationCreate, svc: ServicesDep, request: Request, background: BackgroundTasks
) -> ApplicationReceived:
    """Apply for an account and a container (no login needed). The admins are e-mailed; the decision is
    sent to the e-mail address given. At most ``apply_max_per_hour`` per client address (429 beyond)."""
    info = portal.submit(
        svc,
        name=body.name,
        email=body.email,
        password=body.password,
        supervisor=body.supervisor,
        group_name=body.group_name,
        reason=body.reason,
        source_address=client_address(request),
    )
    background.add_task(portal.notify_admins, svc, info)
    return ApplicationReceived(id=info.id, name=info.name, status=info.status, message=RECEIVED)


@router.get("/applications", response_model=list[ApplicationOut])
def list_applications(
    _: AdminRequired,
    svc: ServicesDep,
    status: Annotated[Literal["pending", "approved", "done", "failed", "rejected"] | None, Query()] = None,
) -> list[ApplicationOut]:
    """Applications, open ones first. Admins only."""
    return [_out(a) for a in portal.list_applications(svc, status=status)]


@router.get("/applications/{application_id}", response_model=ApplicationOut)
def show_application(application_id: int, _: AdminRequired, svc: ServicesDep) -> ApplicationOut:
    """One application with its provisioning progress. Admins only."""
    return _out(portal.get_application(svc, application_id))


@router.post("/applications/{application_id}/approve", response_model=ApplicationOut)
def approve(
    application_id: int, body: ApplicationApprove, _: AdminRequired, svc: ServicesDep, request: Request
) -> ApplicationOut:
    """Approve a pending application, optionally with another template, limits or GPUs. The container is
    provisioned in the background: poll the application for its progress. Admins only."""
    overrides = portal.parse_overrides(
        template=body.template, cpu=body.cpu, memory=body.memory, gpus=body.gpus
    )
    info = portal.approve(svc, application_id, overrides)
    worker(request).enqueue(info.id)
    return _out(info)


@router.post("/applications/{application_id}/reject", response_model=ApplicationOut)
def reject(
    application_id: int,
    body: ApplicationReject,
    _: AdminRequired,
    svc: ServicesDep,
    background: BackgroundTasks,
) -> ApplicationOut:
    """Reject a pending application with a reason; the applicant is e-mailed it. Admins only."""
    info = portal.reject(svc, application_id, reason=body.reason)
    background.add_task(portal.notify_applicant, svc, info)
    return _out(info)


@router.post("/applications/{application_id}/retry", response_model=ApplicationOut)
def retry(application_id: int, _: AdminRequired, svc: ServicesDep, request: Request) -> ApplicationOut:
    """Provision a failed application again (after fixing the cause). Admins only."""
    info = portal.retry(svc, application_id)
    worker(request).enqueue(info.id)
    return _out(info)
