"""JSON API: the caller's own account, password and personal API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from labgpu.services import portal
from labgpu.web.deps import CurrentMember, ServicesDep
from labgpu.web.schemas import (
    ERROR_RESPONSES,
    CountOut,
    MeOut,
    MessageOut,
    NewTokenOut,
    PasswordChange,
    TokenCreate,
    TokenOut,
)
from labgpu.web.security import clear_session_cookie, client_address, set_session_cookie

router = APIRouter(prefix="/api/v1", tags=["account"], responses=ERROR_RESPONSES)


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
