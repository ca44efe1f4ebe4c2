"""Portal accounts: who may log in, with which role, and who is asking (:class:`Identity`).

An account is a ``members`` row (role ``admin`` or ``member``) plus an :class:`~labgpu.store.models.Account`
row holding the password hash; a member added on the command line has no portal password until one is set.
There are no default accounts: the first admin is made with ``labgpu admin create``. Logging in and login
sessions are in :mod:`labgpu.services.portal._logins`, personal API tokens in :mod:`labgpu.services.portal._tokens`.
Every change here is written to the audit log.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult, Result
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labgpu.domain.members import validate_member_name
from labgpu.errors import N_, BadInput, Conflict, LabgpuError, NotFound
from labgpu.services.context import Services
from labgpu.services.portal._passwords import check_password_strength, hash_password
from labgpu.store.db import violated_constraint
from labgpu.store.models import Account, ApiToken, LoginSession, Member, MemberState, Role, utcnow


class Unauthenticated(LabgpuError):
    """The request carries no valid login session or API token."""

    status = 401
    reason = "login-required"


class Forbidden(LabgpuError):
    """The caller is known but may not do this (e.g. a member calling an admin route)."""

    status = 403
    reason = "forbidden"


@dataclass(frozen=True)
class Identity:
    """Who a request comes from, as proven by a login session or a personal API token."""

    member_id: int
    name: str
    role: str
    via: Literal["session", "token"]
    session_id: str | None = None
    token_id: int | None = None
    # An admin's login session without the second factor that require_totp_for_admins asks for: the role
    # above is then "member" until they set it up (services/portal/_totp.py: with_second_factor_rule).
    totp_due: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value


@dataclass(frozen=True)
class AccountInfo:
    name: str
    email: str | None
    role: str
    has_password: bool
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None
    password_changed_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def token_digest(token: str) -> str:
    """What is stored of a session cookie or an API token: its SHA-256 (hex). The tokens carry 256 random
    bits, so a fast hash is enough; a database leak gives no usable token."""
    return hashlib.sha256(token.encode()).hexdigest()


def address_key(source_address: str | None) -> str:
    """The client address as stored (throttling, sessions)."""
    return (source_address or "unknown")[:64]


def _check_email(email: str | None) -> str | None:
    if email is None or not email.strip():
        return None
    email = email.strip()
    if "@" not in email or len(email) > 254 or any(c.isspace() for c in email):
        raise BadInput(f"invalid e-mail address {email[:80]!r}")
    return email


def load_account(session: Session, name: str) -> tuple[Member, Account | None]:
    row = session.execute(
        select(Member, Account).outerjoin(Account, Account.member_id == Member.id).where(Member.name == name)
    ).first()
    if row is None:
        raise NotFound(f"no account named {name}")
    return row[0], row[1]


def _info(member: Member, account: Account | None) -> AccountInfo:
    return AccountInfo(
        name=member.name,
        email=member.email,
        role=str(member.role),
        has_password=account is not None and account.password_hash is not None,
        disabled=account is not None and account.disabled_at is not None,
        created_at=member.created_at,
        last_login_at=account.last_login_at if account else None,
        password_changed_at=account.password_changed_at if account else None,
    )


def create_account(
    svc: Services, *, name: str, password: str, email: str | None = None, role: Role = Role.ADMIN
) -> AccountInfo:
    """Create a portal account: a member row with ``role`` and no container, and its password hash.

    Raises BadInput (name, e-mail), WeakPassword, Conflict when the name is taken. Audited."""
    validate_member_name(name)
    email = _check_email(email)
    check_password_strength(password, name=name)
    password_hash = hash_password(password)
    now = utcnow()
    try:
        with svc.session() as session:
            if session.scalar(select(Member.id).where(Member.name == name)) is not None:
                raise Conflict(
                    f"member {name} already exists",
                    hint=f"give them a portal password with `labgpu admin passwd {name}`",
                )
            # No uid and no container: the reconciler has nothing to do for this member. "stopped" rather
            # than the default "provisioning", which would say a container is on its way.
            member = Member(name=name, email=email, role=role, state=MemberState.STOPPED)
            session.add(member)
            session.flush()
            account = Account(member_id=member.id, password_hash=password_hash, password_changed_at=now)
            session.add(account)
            svc.audit(session, "account.create", name, role=str(role))
            return _info(member, account)
    except IntegrityError as exc:
        if "name" in (violated_constraint(exc) or ""):
            raise Conflict(f"member {name} already exists") from None
        raise


def get_account(svc: Services, name: str) -> AccountInfo:
    """One account (any member, with or without a portal password). Raises NotFound."""
    with svc.session() as session:
        return _info(*load_account(session, name))


def list_accounts(svc: Services, *, admins_only: bool = False) -> list[AccountInfo]:
    """Every member's account state, by name; only admins when ``admins_only``."""
    with svc.session() as session:
        query = (
            select(Member, Account).outerjoin(Account, Account.member_id == Member.id).order_by(Member.name)
        )
        if admins_only:
            query = query.where(Member.role == Role.ADMIN)
        return [_info(m, a) for m, a in session.execute(query).tuples()]


def set_password(svc: Services, *, name: str, password: str) -> None:
    """Set a member's portal password (an admin's doing: no current password asked) and end their sessions.

    Raises NotFound, WeakPassword. Audited."""
    check_password_strength(password, name=name)
    password_hash = hash_password(password)
    now = utcnow()
    with svc.session() as session:
        member, account = load_account(session, name)
        if account is None:
            account = Account(member_id=member.id)
            session.add(account)
        account.password_hash = password_hash
        account.password_changed_at = now
        revoked = revoke_sessions(session, member.id, now)
        svc.audit(session, "account.password.set", name, sessions_revoked=revoked)


def set_disabled(svc: Services, name: str, *, disabled: bool) -> bool:
    """Disable (or enable again) an account. Disabling ends every login session and revokes every API
    token of the member at once (enabling does not bring them back). Returns False when already so.

    Raises NotFound, BadInput when an admin would disable themselves. Audited."""
    if disabled and svc.actor.name == name:
        raise BadInput(N_("you cannot disable your own account"))
    now = utcnow()
    with svc.session() as session:
        member, account = load_account(session, name)
        if account is None:
            account = Account(member_id=member.id)
            session.add(account)
        if (account.disabled_at is not None) == disabled:
            return False
        if disabled:
            account.disabled_at = now
            sessions = revoke_sessions(session, member.id, now)
            tokens = _rowcount(
                session.execute(
                    update(ApiToken)
                    .where(ApiToken.member_id == member.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
            )
            svc.audit(session, "account.disable", name, sessions_revoked=sessions, tokens_revoked=tokens)
        else:
            account.disabled_at = None
            svc.audit(session, "account.enable", name)
        return True


def revoke_sessions(session: Session, member_id: int, now: datetime) -> int:
    return _rowcount(
        session.execute(
            update(LoginSession)
            .where(LoginSession.member_id == member_id, LoginSession.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    )


def _rowcount(result: Result[Any]) -> int:
    # An UPDATE's result is a CursorResult, which knows how many rows it changed.
    return int(cast(CursorResult[Any], result).rowcount or 0)
