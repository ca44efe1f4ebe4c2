"""Personal API tokens: ``Authorization: Bearer lgp_...`` for scripts.

A token is shown once, when it is made; only its SHA-256 is stored. It acts as its member (same role, same
object-level checks) until it is revoked, expires, or the account is disabled (which revokes them all).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from labgpu.errors import N_, BadInput, Conflict, NotFound
from labgpu.services.context import Services
from labgpu.services.portal._accounts import Identity, token_digest
from labgpu.store.models import Account, ApiToken, Member, utcnow

TOKEN_PREFIX = "lgp_"  # noqa: S105 - a label, not a secret
MAX_TOKENS_PER_MEMBER = 50
MAX_TOKEN_DAYS = 3650
# last_used_at is written at most this often, not on every request.
TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass(frozen=True)
class TokenInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "expired": self.expired}


def create_token(
    svc: Services, identity: Identity, *, name: str, expires_days: int | None = None
) -> tuple[str, TokenInfo]:
    """A new personal API token for the member. Returns the token itself (shown once, never stored) and
    its description. Raises BadInput for a bad name or lifetime, Conflict past MAX_TOKENS_PER_MEMBER.
    Audited."""
    label = " ".join(name.split())
    if not label or len(label) > 64 or not label.isprintable():
        raise BadInput(N_("a token needs a name of 1 to 64 printable characters"))
    if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
        raise BadInput(
            N_("a token lasts 1 to %(days)s days (or leave it empty for no expiry)"),
            values={"days": MAX_TOKEN_DAYS},
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    with svc.session() as session:
        active = session.scalar(
            select(func.count())
            .select_from(ApiToken)
            .where(ApiToken.member_id == identity.member_id, ApiToken.revoked_at.is_(None))
        )
        if (active or 0) >= MAX_TOKENS_PER_MEMBER:
            raise Conflict(
                N_("you have %(count)s tokens already; revoke one first"),
                values={"count": MAX_TOKENS_PER_MEMBER},
            )
        row = ApiToken(
            member_id=identity.member_id,
            name=label,
            token_hash=token_digest(token),
            prefix=token[: len(TOKEN_PREFIX) + 4],
            created_at=now,
            expires_at=now + timedelta(days=expires_days) if expires_days else None,
        )
        session.add(row)
        session.flush()
        svc.audit(session, "token.create", identity.name, token_id=row.id, token_name=label)
        return token, _token_info(row)


def _token_info(row: ApiToken) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        expires_at=row.expires_at,
    )


def list_tokens(svc: Services, identity: Identity) -> list[TokenInfo]:
    """The member's tokens that are not revoked (expired ones included, marked), newest first."""
    with svc.session() as session:
        rows = session.scalars(
            select(ApiToken)
            .where(ApiToken.member_id == identity.member_id, ApiToken.revoked_at.is_(None))
            .order_by(ApiToken.id.desc())
        ).all()
        return [_token_info(r) for r in rows]


def revoke_token(svc: Services, identity: Identity, token_id: int) -> None:
    """Revoke one of the member's own tokens. Raises NotFound for another member's (or no) token. Audited."""
    with svc.session() as session:
        row = session.scalars(
            select(ApiToken).where(
                ApiToken.id == token_id,
                ApiToken.member_id == identity.member_id,
                ApiToken.revoked_at.is_(None),
            )
        ).first()
        if row is None:
            raise NotFound(f"you have no token {token_id}")
        row.revoked_at = utcnow()
        svc.audit(session, "token.revoke", identity.name, token_id=row.id, token_name=row.name)


def resolve_token(svc: Services, token: str) -> Identity | None:
    """The member an ``lgp_...`` token belongs to; None when unknown, revoked, expired or the account is
    disabled. Records its use (at most once a minute)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    now = utcnow()
    with svc.session() as session:
        row = session.execute(
            select(ApiToken, Member, Account)
            .join(Member, Member.id == ApiToken.member_id)
            .outerjoin(Account, Account.member_id == Member.id)
            .where(ApiToken.token_hash == token_digest(token))
        ).first()
        if row is None:
            return None
        api_token, member, account = row
        if (
            api_token.revoked_at is not None
            or (api_token.expires_at is not None and api_token.expires_at <= now)
            or (account is not None and account.disabled_at is not None)
        ):
            return None
        if api_token.last_used_at is None or now - api_token.last_used_at >= TOUCH_INTERVAL:
            api_token.last_used_at = now
        return Identity(member.id, member.name, str(member.role), "token", token_id=api_token.id)
