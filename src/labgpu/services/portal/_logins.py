"""Logging in: password checks with throttling, server-side login sessions, logout (everywhere),
password changes.

A login session is a random token in the browser's cookie; only its SHA-256 is stored, with the member,
times, address and user agent. A session ends when it is revoked (logout, logout everywhere, a password
change, the account disabled), after ``session_idle_minutes`` without a request, or ``session_max_hours``
after it began. Failed logins are counted in the store (so the throttle holds across restarts and several
workers) per account and per client address.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.orm import Session, aliased

from labgpu.errors import N_, BadInput, LabgpuError
from labgpu.services.context import Actor, Services
from labgpu.services.portal._accounts import (
    Identity,
    address_key,
    load_account,
    revoke_sessions,
    token_digest,
)
from labgpu.services.portal._passwords import (
    check_password_strength,
    hash_password,
    password_hasher,
    verify_password,
)
from labgpu.services.portal._totp import SecondStep, open_pending_login, totp_enabled
from labgpu.settings import Settings
from labgpu.store.models import Account, LoginAttempt, LoginSession, Member, Role, utcnow

# last_seen_at is written at most this often, not on every request.
TOUCH_INTERVAL = timedelta(seconds=60)
# Login attempts are kept at least this long (longer when the throttle window is longer).
ATTEMPT_RETENTION = timedelta(days=1)
MAX_NAME_TRIED = 64


class LoginFailed(LabgpuError):
    """Wrong name or password (never says which), or a disabled account."""

    status = 401
    reason = "login-failed"


class WrongPassword(BadInput):
    """The current password given to confirm a change is not right."""

    status = 403
    reason = "wrong-password"


class Throttled(LabgpuError):
    """Too many failed logins for this account or from this address; try again later."""

    status = 429
    reason = "throttled"

    def __init__(self, message: str, *, retry_after: int, values: Mapping[str, object] | None = None) -> None:
        super().__init__(message, values=values)
        self.retry_after = retry_after

    @property
    def minutes(self) -> int:
        """``retry_after`` in whole minutes, rounded up (at least 1): what a page says."""
        return max(1, (self.retry_after + 59) // 60)


@dataclass(frozen=True)
class SessionInfo:
    id_prefix: str  # the first characters of the stored hash: enough to tell sessions apart, useless to steal
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    source_address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class NewLogin:
    """A fresh login session: the cookie's token (given to the browser only) and who it is."""

    token: str
    identity: Identity


def change_password(
    svc: Services, identity: Identity, *, current: str, new: str, source_address: str | None
) -> None:
    """A member changes their own password, confirming with the current one. Ends ALL their login
    sessions (the caller starts a new one for the browser that asked); API tokens stay.

    A wrong current password counts as a failed login (throttled like one). Raises WrongPassword,
    Throttled, WeakPassword. Audited."""
    check_password_strength(new, name=identity.name)
    now = utcnow()
    address = address_key(source_address)
    with svc.session() as session:
        _check_throttle(session, svc.settings, identity.name, address, now)
        member, account = load_account(session, identity.name)
        ok = account is not None and verify_password(account.password_hash, current)
        session.add(LoginAttempt(at=now, account=identity.name, source_address=address, succeeded=ok))
        if ok:
            assert account is not None
            if current == new:
                raise BadInput(N_("the new password is the same as the current one"))
            account.password_hash = hash_password(new)
            account.password_changed_at = now
            revoked = revoke_sessions(session, member.id, now)
            svc.audit(session, "account.password.change", identity.name, sessions_revoked=revoked)
        else:
            svc.audit(session, "account.password.change.failed", identity.name)
    if not ok:
        raise WrongPassword(N_("the current password is not right"))


def authenticate(
    svc: Services, *, name: str, password: str, source_address: str | None, user_agent: str | None
) -> NewLogin | SecondStep:
    """Check a name and password and start a login session (a new session id every time: no fixation),
    or, for a member with two-factor log-in, a pending log-in that waits for the code
    (:class:`SecondStep`; the session comes from ``_totp_login.finish_login``).

    Refused logins are counted per account and per address; past the limits (settings) this raises
    Throttled before the password is even checked. Raises LoginFailed for a wrong name or password or a
    disabled account. Rehashes the password when the hash parameters changed. Audited (also failures)."""
    settings = svc.settings
    tried = name.strip().lower()[:MAX_NAME_TRIED]
    address = address_key(source_address)
    now = utcnow()
    failure: str | None = None
    result: NewLogin | SecondStep | None = None
    with svc.session() as session:
        session.execute(
            delete(LoginAttempt).where(LoginAttempt.at < now - max(ATTEMPT_RETENTION, _window(settings) * 2))
        )
        _check_throttle(session, settings, tried, address, now)
        row = session.execute(
            select(Member, Account).join(Account, Account.member_id == Member.id).where(Member.name == tried)
        ).first()
        member, account = (row[0], row[1]) if row is not None else (None, None)
        ok = verify_password(account.password_hash if account else None, password)
        if ok and account is not None and account.disabled_at is not None:
            ok, failure = False, N_("this account is disabled; ask an admin to enable it")
        elif not ok:
            failure = N_("wrong name or password")
        # With a second factor, the password opens a pending log-in and only the code's outcome counts for
        # the throttle (a right password alone must not clear the count of wrong codes).
        second_step = ok and member is not None and totp_enabled(session, member.id)
        if not second_step:
            session.add(LoginAttempt(at=now, account=tried, source_address=address, succeeded=ok))
        if not ok or member is None or account is None:
            svc.audit(session, "account.login.failed", tried, reason=failure)
        else:
            assert account.password_hash is not None
            if password_hasher().check_needs_rehash(account.password_hash):
                account.password_hash = hash_password(password)
            if second_step:
                result = open_pending_login(
                    svc,
                    session,
                    member_id=member.id,
                    name=member.name,
                    is_admin=member.role == Role.ADMIN,
                    now=now,
                )
                return result
            account.last_login_at = now
            token = _start_session(session, settings, member.id, address, user_agent, now)
            # The actor is the member who just proved who they are, not the anonymous visitor.
            as_member = Actor(member.name, svc.actor.source_address, member.role == Role.ADMIN)
            replace(svc, actor=as_member).audit(session, "account.login", member.name)
            identity = Identity(
                member.id, member.name, str(member.role), "session", session_id=token_digest(token)
            )
            result = NewLogin(token=token, identity=identity)
    if result is None:
        raise LoginFailed(failure or N_("wrong name or password"))
    return result


def _window(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.login_throttle_minutes)


def _check_throttle(session: Session, settings: Settings, account: str, address: str, now: datetime) -> None:
    """Raise Throttled when the account or the address has used up its failed logins in the window.

    Per account: failures since the window began or since its last successful login, whichever is later.
    Per address: failures from it in the window, less those of an account that later logged in from the
    same address (a member who mistyped), so logging in to one's own account does not clear the count
    for guesses at others."""
    window_start = now - _window(settings)
    last_ok = session.scalar(
        select(func.max(LoginAttempt.at)).where(LoginAttempt.account == account, LoginAttempt.succeeded)
    )
    since = max(window_start, last_ok) if last_ok is not None else window_start
    account_failures = list(
        session.scalars(
            select(LoginAttempt.at)
            .where(LoginAttempt.account == account, ~LoginAttempt.succeeded, LoginAttempt.at > since)
            .order_by(LoginAttempt.at)
        )
    )
    later_ok = aliased(LoginAttempt)
    forgiven = (
        select(later_ok.id)
        .where(
            later_ok.account == LoginAttempt.account,
            later_ok.source_address == LoginAttempt.source_address,
            later_ok.succeeded,
            later_ok.at > LoginAttempt.at,
        )
        .exists()
    )
    address_failures = list(
        session.scalars(
            select(LoginAttempt.at)
            .where(
                and_(
                    LoginAttempt.source_address == address,
                    ~LoginAttempt.succeeded,
                    LoginAttempt.at > window_start,
                    ~forgiven,
                )
            )
            .order_by(LoginAttempt.at)
        )
    )
    waits = []
    for failures, limit in (
        (account_failures, settings.login_max_failures_per_account),
        (address_failures, settings.login_max_failures_per_address),
    ):
        if len(failures) >= limit:
            # The count falls under the limit when the oldest failures beyond it leave the window.
            frees_at = failures[len(failures) - limit] + _window(settings)
            waits.append(max(1, int((frees_at - now).total_seconds()) + 1))
    if waits:
        wait = max(waits)
        minutes = max(1, (wait + 59) // 60)
        raise Throttled(
            f"too many failed logins; try again in {minutes} minute{'s' if minutes != 1 else ''}",
            retry_after=wait,
        )


def _start_session(
    session: Session,
    settings: Settings,
    member_id: int,
    address: str,
    user_agent: str | None,
    now: datetime,
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        LoginSession(
            id=token_digest(token),
            member_id=member_id,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=settings.session_max_hours),
            source_address=address,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    return token


def start_session(
    svc: Services, identity: Identity, *, source_address: str | None, user_agent: str | None
) -> NewLogin:
    """A new login session for a member who just proved who they are again (after a password change)."""
    now = utcnow()
    with svc.session() as session:
        token = _start_session(
            session, svc.settings, identity.member_id, address_key(source_address), user_agent, now
        )
    new = Identity(
        identity.member_id, identity.name, identity.role, "session", session_id=token_digest(token)
    )
    return NewLogin(token=token, identity=new)


def resolve_session(svc: Services, token: str, *, touch: bool = True) -> Identity | None:
    """The member a session cookie belongs to; None when it is unknown, revoked, past its idle or
    absolute timeout, or its account is disabled. Records the activity (at most once a minute) unless
    ``touch`` is False (an open terminal asking whether its login still holds, with no keystroke since)."""
    if not token or len(token) > 128:
        return None
    return resolve_session_id(svc, token_digest(token), touch=touch)


def resolve_session_id(svc: Services, session_id: str, *, touch: bool = True) -> Identity | None:
    """:func:`resolve_session` for a session known by its id (the digest of its cookie), e.g. the one an app
    cookie of the apps origin is bound to: None once that login has ended, timed out or been disabled."""
    now = utcnow()
    idle = timedelta(minutes=svc.settings.session_idle_minutes)
    with svc.session() as session:
        row = session.execute(
            select(LoginSession, Member, Account)
            .join(Member, Member.id == LoginSession.member_id)
            .outerjoin(Account, Account.member_id == Member.id)
            .where(LoginSession.id == session_id)
        ).first()
        if row is None:
            return None
        login, member, account = row
        if (
            login.revoked_at is not None
            or login.expires_at <= now
            or login.last_seen_at + idle <= now
            or (account is not None and account.disabled_at is not None)
        ):
            return None
        if touch and now - login.last_seen_at >= TOUCH_INTERVAL:
            login.last_seen_at = now
        return Identity(member.id, member.name, str(member.role), "session", session_id=session_id)


def end_session(svc: Services, identity: Identity) -> None:
    """Log out: revoke the session this request came with. Audited."""
    if identity.session_id is None:
        return
    with svc.session() as session:
        session.execute(
            update(LoginSession)
            .where(LoginSession.id == identity.session_id, LoginSession.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        svc.audit(session, "account.logout", identity.name)


def end_all_sessions(svc: Services, identity: Identity) -> int:
    """Log out everywhere: revoke every login session of the member (this one too). Returns how many.

    API tokens are not touched (they are listed, and revoked, one by one). Audited."""
    with svc.session() as session:
        count = revoke_sessions(session, identity.member_id, utcnow())
        svc.audit(session, "account.logout_everywhere", identity.name, sessions_revoked=count)
    return count


def list_sessions(svc: Services, identity: Identity) -> list[SessionInfo]:
    """The member's live login sessions, newest first."""
    now = utcnow()
    idle_start = now - timedelta(minutes=svc.settings.session_idle_minutes)
    with svc.session() as session:
        rows = session.scalars(
            select(LoginSession)
            .where(
                LoginSession.member_id == identity.member_id,
                LoginSession.revoked_at.is_(None),
                LoginSession.expires_at > now,
                LoginSession.last_seen_at > idle_start,
            )
            .order_by(LoginSession.created_at.desc())
        ).all()
        return [
            SessionInfo(
                id_prefix=r.id[:8],
                created_at=r.created_at,
                last_seen_at=r.last_seen_at,
                expires_at=r.expires_at,
                source_address=r.source_address,
                user_agent=r.user_agent,
            )
            for r in rows
        ]
