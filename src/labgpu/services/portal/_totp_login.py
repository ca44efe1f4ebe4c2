"""The second step of a log-in: the pending log-in (made by a right password, ``_logins.authenticate``)
plus a right TOTP or recovery code becomes a login session.

A wrong code counts as a failed log-in for the account and the address (the same throttle as passwords,
checked before the code is); PENDING_MAX_FAILURES wrong codes end the pending log-in, so the password must
be typed again. A pending log-in works once and for PENDING_MINUTES.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from labgpu.errors import N_, LabgpuError
from labgpu.services.context import Actor, Services
from labgpu.services.portal._accounts import Identity, address_key, token_digest
from labgpu.services.portal._logins import NewLogin, _check_throttle, _start_session
from labgpu.services.portal._totp import (
    PENDING_MAX_FAILURES,
    WrongCode,
    _rowcount,
    check_code,
    is_totp_code,
    normalise_code,
    recovery_codes_left,
    use_recovery_code,
)
from labgpu.store.models import Account, LoginAttempt, Member, PendingLogin, Role, utcnow

MAX_TOKEN = 128


class LoginExpired(LabgpuError):
    """The pending log-in is unknown, used, past its time, or ended by too many wrong codes."""

    status = 401
    reason = "login-expired"


@dataclass(frozen=True)
class PendingInfo:
    name: str
    expires_at: datetime


@dataclass(frozen=True)
class SecondStepDone:
    """The session the code opened; ``recovery_codes_left`` when a recovery code was used."""

    login: NewLogin
    recovery_codes_left: int | None


def _live(session: Session, token: str, now: datetime) -> tuple[PendingLogin, Member, Account | None] | None:
    if not token or len(token) > MAX_TOKEN:
        return None
    row = session.execute(
        select(PendingLogin, Member, Account)
        .join(Member, Member.id == PendingLogin.member_id)
        .outerjoin(Account, Account.member_id == Member.id)
        .where(PendingLogin.id == token_digest(token))
    ).first()
    if row is None:
        return None
    pending, member, account = row
    if pending.used_at is not None or pending.expires_at <= now or pending.failures >= PENDING_MAX_FAILURES:
        return None
    if account is not None and account.disabled_at is not None:
        return None
    return pending, member, account


def pending_login(svc: Services, token: str) -> PendingInfo | None:
    """Whose pending log-in the cookie's token is, while it can still be finished; None otherwise."""
    now = utcnow()
    with svc.session() as session:
        found = _live(session, token, now)
        return PendingInfo(found[1].name, found[0].expires_at) if found else None


def finish_login(
    svc: Services, *, token: str, code: str, source_address: str | None, user_agent: str | None
) -> SecondStepDone:
    """Check the code of a pending log-in and open the login session (a new session id; the pending log-in
    ends). ``code`` is a TOTP code or one of the member's recovery codes (used up by this).

    Raises LoginExpired (start again with the password), Throttled (before the code is checked), WrongCode.
    Audited, failures too."""
    now = utcnow()
    address = address_key(source_address)
    typed = normalise_code(code)
    failed = expired = False
    done: SecondStepDone | None = None
    with svc.session() as session:
        session.execute(delete(PendingLogin).where(PendingLogin.expires_at < now))
        found = _live(session, token, now)
        if found is None:
            expired = True
        else:
            pending, member, account = found
            _check_throttle(session, svc.settings, member.name, address, now)
            as_member = replace(
                svc, actor=Actor(member.name, svc.actor.source_address, member.role == Role.ADMIN)
            )
            method = "totp" if is_totp_code(typed) else "recovery-code"
            ok = (
                check_code(session, member.id, typed, now)
                if method == "totp"
                else use_recovery_code(session, member.id, typed, now)
            )
            if ok:
                # Exactly once, whatever races: a pending log-in opens one session.
                taken = session.execute(
                    update(PendingLogin)
                    .where(PendingLogin.id == pending.id, PendingLogin.used_at.is_(None))
                    .values(used_at=now)
                )
                ok = _rowcount(taken) == 1
            session.add(LoginAttempt(at=now, account=member.name, source_address=address, succeeded=ok))
            if not ok:
                pending.failures += 1
                failed = True
                as_member.audit(
                    session, "account.login.failed", member.name, reason="wrong second-factor code"
                )
            else:
                if account is not None:
                    account.last_login_at = now
                session_token = _start_session(session, svc.settings, member.id, address, user_agent, now)
                left = recovery_codes_left(session, member.id) if method == "recovery-code" else None
                extra = {"recovery_codes_left": left} if left is not None else {}
                as_member.audit(session, "account.login", member.name, second_factor=method, **extra)
                identity = Identity(
                    member.id,
                    member.name,
                    str(member.role),
                    "session",
                    session_id=token_digest(session_token),
                )
                done = SecondStepDone(NewLogin(token=session_token, identity=identity), left)
    if expired:
        raise LoginExpired(N_("this log-in has expired; enter your name and password again"))
    if failed or done is None:
        raise WrongCode(N_("that code is not right; type the code your app shows now"))
    return done
