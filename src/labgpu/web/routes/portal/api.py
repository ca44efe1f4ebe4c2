"""The portal's API under /api/v1: my account and tokens, applications, accounts and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request, Response

from labgpu.services import portal
from labgpu.web.deps import AdminRequired, CurrentMember, ServicesDep
from labgpu.web.schemas import (
    ERROR_RESPONSES,
    AccountOut,
    ApplicationApprove,
    ApplicationCreate,
    ApplicationOut,
    ApplicationReceived,
    ApplicationReject,
    AuditOut,
    CountOut,
    MeOut,
    MessageOut,
    NewTokenOut,
    PasswordChange,
    TokenCreate,
    TokenOut,
)
from labgpu.web.security import clear_session_cookie, client_address, set_session_cookie
from labgpu.web.terminals import end_terminals

router = APIRouter(prefix="/api/v1", tags=["portal"], responses=ERROR_RESPONSES)


@router.get("/me", response_model=MeOut)
def me(identity: CurrentMember, svc: ServicesDep) -> MeOut:
    """The caller's account."""
    info = portal.get_account(svc, identity.name)
    return MeOut(**info.as_dict(), auth=identity.via)


@router.post("/me/password", response_model=MessageOut)
def change_password(
    body: PasswordChange, identity: CurrentMember, svc: ServicesDep, request: Request, response: Response
) -> MessageOut:
    """Change the caller's password (the current one confirms it). Ends every login session; a browser
    calling this gets a new one. API tokens keep working."""
    portal.change_password(
        svc,
        identity,
        current=body.current_password,
        new=body.new_password,
        source_address=client_address(request),
    )
    if identity.via == "session":
        fresh = portal.start_session(
            svc,
            identity,
            source_address=client_address(request),
            user_agent=request.headers.get("user-agent"),
        )
        set_session_cookie(request, response, fresh.token)
    return MessageOut(message="password changed; your other login sessions have ended")


@router.post("/me/logout-everywhere", response_model=CountOut)
def logout_everywhere(
    identity: CurrentMember, svc: ServicesDep, request: Request, response: Response
) -> CountOut:
    """End every login session of the caller (this one too). API tokens are not affected."""
    count = portal.end_all_sessions(svc, identity)
    end_terminals(request, account=identity.name)
    if identity.via == "session":
        clear_session_cookie(request, response)
    return CountOut(count=count)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(identity: CurrentMember, svc: ServicesDep) -> list[TokenOut]:
    """The caller's personal API tokens (never the tokens themselves)."""
    return [TokenOut(**t.as_dict()) for t in portal.list_tokens(svc, identity)]


@router.post("/tokens", response_model=NewTokenOut, status_code=201)
def create_token(body: TokenCreate, identity: CurrentMember, svc: ServicesDep) -> NewTokenOut:
    """Make a personal API token. The answer holds the token: it is shown this once."""
    token, info = portal.create_token(svc, identity, name=body.name, expires_days=body.expires_days)
    return NewTokenOut(**info.as_dict(), token=token)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: int, identity: CurrentMember, svc: ServicesDep) -> Response:
    """Revoke one of the caller's tokens (404 for a token that is not theirs)."""
    portal.revoke_token(svc, identity, token_id)
    return Response(status_code=204)


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


@router.get("/accounts", response_model=list[AccountOut])
def list_accounts(_: AdminRequired, svc: ServicesDep, admins_only: bool = False) -> list[AccountOut]:
    """Every member's portal account: role, whether they have a password, disabled. Admins only."""
    return [AccountOut(**a.as_dict()) for a in portal.list_accounts(svc, admins_only=admins_only)]


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
