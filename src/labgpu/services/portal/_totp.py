"""Two-factor log-in, the parts the password step needs: TOTP codes (RFC 6238), recovery codes, and the
pending log-in that stands between a right password and a login session.

- A code is 6 digits for a 30-second time step, from a 160-bit secret (SHA-1, what every authenticator app
  supports). The step before and the step after are accepted too (a phone's clock a little off), and a
  code is taken once: the step of the last accepted code is stored, and a code of that step or an earlier
  one is refused (RFC 6238 section 5.2). The update is conditional in SQL, so two requests racing with the
  same code cannot both pass.
- Recovery codes: RECOVERY_CODES of them, each 10 characters of an alphabet without look-alikes, made when
  TOTP is turned on (and on request), shown once, stored as argon2id hashes like passwords; each works once.
- A pending log-in (:class:`~labgpu.store.models.PendingLogin`) is what a right password gives a member
  with TOTP: a random token in a cookie that lasts PENDING_MINUTES and opens nothing but the code form. It
  is not a login session: :func:`labgpu.services.portal._logins.resolve_session` never sees it.

Enrolment and the account page's actions are in ``_totp_enrol``, the code step of the log-in in
``_totp_login``; this module imports neither (the password step in ``_logins`` uses it).
"""

from __future__ import annotations

import base64
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, cast

import pyotp
from sqlalchemy import or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from labgpu.errors import N_, LabgpuError
from labgpu.services.context import Actor, Services
from labgpu.services.portal._accounts import Identity, token_digest
from labgpu.services.portal._passwords import hash_password, password_hasher
from labgpu.settings import Settings
from labgpu.store.models import PendingLogin, Role, TotpCredential, TotpRecoveryCode

STEP_SECONDS = 30
DIGITS = 6
# Steps accepted on either side of the current one: one is what RFC 6238 recommends for network delay.
DRIFT_STEPS = 1
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i
RECOVERY_LENGTH = 10  # ~49 bits each
PENDING_MINUTES = 5
# Wrong codes one pending log-in takes before it ends (the password must then be typed again); the login
# throttle counts them too.
PENDING_MAX_FAILURES = 5
MAX_CODE_INPUT = 64


class TotpEnrolmentRequired(LabgpuError):
    """An admin whose log-in lacks the second factor that require_totp_for_admins asks for."""

    status = 403
    reason = "totp-enrolment-required"


class WrongCode(LabgpuError):
    """A TOTP or recovery code that is not right (or was used already)."""

    status = 401
    reason = "wrong-code"


@dataclass(frozen=True)
class SecondStep:
    """The password was right and the member has TOTP: the pending log-in's token (for the browser's
    short-lived cookie only) and whose it is. No login session exists yet."""

    token: str
    name: str
    seconds: int  # how long it lasts (the cookie's max-age)


# Codes ----------------------------------------------------------------------------------------------


def new_secret() -> str:
    """A fresh TOTP secret: 160 random bits, base32 (32 characters, no padding)."""
    return base64.b32encode(secrets.token_bytes(20)).decode()


def current_step(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def normalise_code(code: str) -> str:
    """What was typed, without spaces and dashes, lower case ("123 456" -> "123456", "ABCDE-FGHJK")."""
    return "".join(c for c in code[:MAX_CODE_INPUT] if c not in " -\t").lower()


def is_totp_code(code: str) -> bool:
    return len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(secret: str, code: str, now: datetime, *, after: int | None) -> int | None:
    """The time step (now, or one either side) whose code ``code`` is, if later than ``after``; else None."""
    if not is_totp_code(code):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    found = None
    step = current_step(now)
    for candidate in range(step - DRIFT_STEPS, step + DRIFT_STEPS + 1):
        # Every candidate is compared (in constant time), whichever matches.
        if hmac.compare_digest(totp.generate_otp(candidate), code) and (after is None or candidate > after):
            found = candidate
    return found


def take_step(session: Session, member_id: int, step: int) -> bool:
    """Record ``step`` as the last code used, unless that code (or a later one) was taken already: the
    conditional UPDATE lets exactly one of two racing requests through."""
    result = session.execute(
        update(TotpCredential)
        .where(
            TotpCredential.member_id == member_id,
            or_(TotpCredential.last_step.is_(None), TotpCredential.last_step < step),
        )
        .values(last_step=step)
    )
    return _rowcount(result) == 1


def check_code(session: Session, member_id: int, code: str, now: datetime) -> bool:
    """Whether ``code`` is a right, unused TOTP code of the member's active secret; taking it if so."""
    credential = session.get(TotpCredential, member_id)
    if credential is None or credential.secret is None:
        return False
    step = matching_step(credential.secret, code, now, after=credential.last_step)
    return step is not None and take_step(session, member_id, step)


# Recovery codes -------------------------------------------------------------------------------------


def new_recovery_codes(session: Session, member_id: int, now: datetime) -> list[str]:
    """Replace the member's recovery codes with RECOVERY_CODES new ones; returns them (shown once)."""
    for old in session.scalars(select(TotpRecoveryCode).where(TotpRecoveryCode.member_id == member_id)):
        session.delete(old)
    codes = []
    for _ in range(RECOVERY_CODES):
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_LENGTH))
        session.add(TotpRecoveryCode(member_id=member_id, code_hash=hash_password(raw)))
        codes.append(f"{raw[:5]}-{raw[5:]}")
    return codes


def use_recovery_code(session: Session, member_id: int, code: str, now: datetime) -> bool:
    """Whether ``code`` (normalised) is one of the member's unused recovery codes; marks it used if so."""
    if len(code) != RECOVERY_LENGTH or any(c not in RECOVERY_ALPHABET for c in code):
        return False
    unused = session.scalars(
        select(TotpRecoveryCode).where(
            TotpRecoveryCode.member_id == member_id, TotpRecoveryCode.used_at.is_(None)
        )
    ).all()
    for row in unused:
        if _verify_hash(row.code_hash, code):
            taken = session.execute(
                update(TotpRecoveryCode)
                .where(TotpRecoveryCode.id == row.id, TotpRecoveryCode.used_at.is_(None))
                .values(used_at=now)
            )
            return _rowcount(taken) == 1
    return False


def recovery_codes_left(session: Session, member_id: int) -> int:
    return len(
        session.scalars(
            select(TotpRecoveryCode.id).where(
                TotpRecoveryCode.member_id == member_id, TotpRecoveryCode.used_at.is_(None)
            )
        ).all()
    )


def _verify_hash(stored: str, code: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return password_hasher().verify(stored, code)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# The password step ------------------------------------------------------------------------------------


def totp_enabled(session: Session, member_id: int) -> bool:
    """Whether the member logs in with a second factor (an active TOTP secret)."""
    secret = session.scalar(select(TotpCredential.secret).where(TotpCredential.member_id == member_id))
    return secret is not None


def open_pending_login(
    svc: Services, session: Session, *, member_id: int, name: str, is_admin: bool, now: datetime
) -> SecondStep:
    """After a right password of a member with TOTP: a pending log-in instead of a session. Audited."""
    token = secrets.token_urlsafe(32)
    expires_at = now + timedelta(minutes=PENDING_MINUTES)
    session.add(PendingLogin(id=token_digest(token), member_id=member_id, expires_at=expires_at))
    # The actor is the member who just proved their password, not the anonymous visitor.
    as_member = Actor(name, svc.actor.source_address, is_admin)
    replace(svc, actor=as_member).audit(session, "account.login.password", name, second_factor="totp")
    return SecondStep(token=token, name=name, seconds=PENDING_MINUTES * 60)


# The rule for admins ----------------------------------------------------------------------------------


def enrolment_due(settings: Settings, session: Session, member_id: int, role: str) -> bool:
    return (
        settings.require_totp_for_admins and role == Role.ADMIN.value and not totp_enabled(session, member_id)
    )


def with_second_factor_rule(svc: Services, identity: Identity | None) -> Identity | None:
    """The identity a login session really grants: with ``require_totp_for_admins``, an admin without TOTP
    is a member (``totp_due`` set) until they set it up, on every route, so that no admin power (admin
    pages, another member's objects, the API with the cookie) is left to a password alone. API tokens are
    not affected. Does a query only when the rule can apply."""
    if (
        identity is None
        or identity.via != "session"
        or not identity.is_admin
        or not svc.settings.require_totp_for_admins
    ):
        return identity
    with svc.session() as session:
        due = enrolment_due(svc.settings, session, identity.member_id, identity.role)
    if not due:
        return identity
    return Identity(
        identity.member_id,
        identity.name,
        Role.MEMBER.value,
        identity.via,
        session_id=identity.session_id,
        token_id=identity.token_id,
        totp_due=True,
    )


def enrolment_required_error() -> TotpEnrolmentRequired:
    return TotpEnrolmentRequired(
        N_("admins must set up two-factor log-in first (My account, Two-factor log-in)")
    )


def _rowcount(result: Any) -> int:
    return int(cast(CursorResult[Any], result).rowcount or 0)
