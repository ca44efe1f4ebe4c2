"""Setting up two-factor log-in (TOTP) on one's own account, and an admin's reset of someone else's.

Set-up is two steps: :func:`start_totp_setup` makes a new secret that is only *pending* (shown as a QR code
and as text); :func:`confirm_totp` makes it active once a code made with it is typed in, and returns the
recovery codes (shown once). An active authenticator stays in force until the new one is confirmed, so
setting up a new phone never leaves the account without a second factor. A wrong code on these forms
counts as a failed log-in (throttled like one), as a wrong current password does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import pyotp
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from labgpu.errors import N_, BadInput, Conflict
from labgpu.services.context import Services
from labgpu.services.portal._accounts import Identity, address_key, load_account
from labgpu.services.portal._logins import _check_throttle
from labgpu.services.portal._totp import (
    DIGITS,
    STEP_SECONDS,
    WrongCode,
    check_code,
    matching_step,
    new_recovery_codes,
    new_secret,
    normalise_code,
    recovery_codes_left,
    use_recovery_code,
)
from labgpu.store.models import LoginAttempt, PendingLogin, TotpCredential, TotpRecoveryCode, utcnow

ISSUER = "labgpu"


@dataclass(frozen=True)
class TotpSetup:
    """A secret waiting for its first code: what the authenticator app is given (QR code or text)."""

    secret: str
    uri: str  # otpauth://totp/...

    @property
    def grouped_secret(self) -> str:
        """The secret in groups of four, easier to type into an app by hand."""
        return " ".join(self.secret[i : i + 4] for i in range(0, len(self.secret), 4))


@dataclass(frozen=True)
class TotpStatus:
    enabled: bool
    enabled_at: datetime | None
    recovery_codes_left: int
    setup: TotpSetup | None  # a set-up in progress
    required: bool  # require_totp_for_admins applies to this member: it cannot be turned off


def _issuer(svc: Services) -> str:
    host = urlsplit(svc.settings.portal_url or "").hostname
    return f"{ISSUER} ({host})" if host else ISSUER


def _setup(svc: Services, name: str, secret: str) -> TotpSetup:
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=name, issuer_name=_issuer(svc)
    )
    return TotpSetup(secret=secret, uri=uri)


def _required(svc: Services, identity: Identity) -> bool:
    return svc.settings.require_totp_for_admins and (identity.is_admin or identity.totp_due)


def totp_status(svc: Services, identity: Identity) -> TotpStatus:
    """The member's two-factor log-in: on or off, recovery codes left, a set-up in progress."""
    with svc.session() as session:
        credential = session.get(TotpCredential, identity.member_id)
        return TotpStatus(
            enabled=credential is not None and credential.secret is not None,
            enabled_at=credential.enabled_at if credential else None,
            recovery_codes_left=recovery_codes_left(session, identity.member_id),
            setup=(
                _setup(svc, identity.name, credential.pending_secret)
                if credential is not None and credential.pending_secret
                else None
            ),
            required=_required(svc, identity),
        )


def start_totp_setup(svc: Services, identity: Identity) -> TotpSetup:
    """A new pending secret for the member (any earlier pending one is replaced; an active one stays in
    force until this one is confirmed). Audited."""
    secret = new_secret()
    now = utcnow()
    with svc.session() as session:
        credential = session.get(TotpCredential, identity.member_id)
        if credential is None:
            credential = TotpCredential(member_id=identity.member_id, created_at=now)
            session.add(credential)
        credential.pending_secret = secret
        svc.audit(session, "account.totp.setup", identity.name)
    return _setup(svc, identity.name, secret)


def _count(svc: Services, identity: Identity, ok: bool, source_address: str | None) -> None:
    """A wrong code typed on the account page counts as a failed log-in; nothing is recorded for a right
    one (it is not a log-in)."""
    if ok:
        return
    with svc.session() as session:
        session.add(
            LoginAttempt(
                at=utcnow(),
                account=identity.name,
                source_address=address_key(source_address),
                succeeded=False,
            )
        )


def _throttle(svc: Services, identity: Identity, source_address: str | None) -> None:
    with svc.session() as session:
        _check_throttle(session, svc.settings, identity.name, address_key(source_address), utcnow())


def confirm_totp(svc: Services, identity: Identity, *, code: str, source_address: str | None) -> list[str]:
    """Make the pending secret active with a first code made with it; returns the new recovery codes
    (RECOVERY_CODES of them, shown once; earlier ones stop working). Raises BadInput when no set-up is in
    progress, WrongCode, Throttled. Audited."""
    _throttle(svc, identity, source_address)
    typed = normalise_code(code)
    now = utcnow()
    codes: list[str] | None = None
    with svc.session() as session:
        credential = session.get(TotpCredential, identity.member_id)
        if credential is None or not credential.pending_secret:
            raise BadInput(N_("start setting up two-factor log-in first"))
        # The new secret's steps start afresh: the code just typed is its first one taken.
        step = matching_step(credential.pending_secret, typed, now, after=None)
        if step is not None:
            credential.secret = credential.pending_secret
            credential.enabled_at = now
            credential.pending_secret = None
            credential.last_step = step
            codes = new_recovery_codes(session, identity.member_id, now)
            svc.audit(session, "account.totp.enable", identity.name)
    _count(svc, identity, codes is not None, source_address)
    if codes is None:
        raise WrongCode(N_("that code is not right; type the code your app shows now"))
    return codes


def _check_current(
    svc: Services, identity: Identity, code: str, source_address: str | None, now: datetime
) -> None:
    """A right code of the active authenticator (or an unused recovery code), or WrongCode/Throttled."""
    _throttle(svc, identity, source_address)
    typed = normalise_code(code)
    with svc.session() as session:
        credential = session.get(TotpCredential, identity.member_id)
        if credential is None or credential.secret is None:
            raise BadInput(N_("two-factor log-in is not turned on"))
        ok = check_code(session, identity.member_id, typed, now) or use_recovery_code(
            session, identity.member_id, typed, now
        )
    _count(svc, identity, ok, source_address)
    if not ok:
        raise WrongCode(N_("that code is not right; type the code your app shows now"))


def renew_recovery_codes(
    svc: Services, identity: Identity, *, code: str, source_address: str | None
) -> list[str]:
    """New recovery codes (the old ones stop working), confirmed with a current code. Raises WrongCode,
    Throttled, BadInput when TOTP is off. Audited."""
    now = utcnow()
    _check_current(svc, identity, code, source_address, now)
    with svc.session() as session:
        codes = new_recovery_codes(session, identity.member_id, now)
        svc.audit(session, "account.totp.recovery_codes", identity.name)
    return codes


def disable_totp(svc: Services, identity: Identity, *, code: str, source_address: str | None) -> None:
    """Turn two-factor log-in off, confirmed with a current code (or a recovery code). Refused (Conflict)
    for an admin while require_totp_for_admins is on. Audited."""
    if _required(svc, identity):
        raise Conflict(
            N_(
                "two-factor log-in is required for admins: set up a new authenticator instead of turning it off"
            )
        )
    now = utcnow()
    _check_current(svc, identity, code, source_address, now)
    with svc.session() as session:
        _remove(session, identity.member_id)
        svc.audit(session, "account.totp.disable", identity.name)


def reset_totp(svc: Services, name: str) -> bool:
    """An admin's doing (the command line): remove a member's TOTP and recovery codes, e.g. for an admin
    who lost their phone. Pending log-ins end; login sessions stay. Returns False when there was nothing
    to remove. With require_totp_for_admins, an admin reset so sets it up again at the next log-in.

    Raises NotFound. Audited."""
    with svc.session() as session:
        member, _ = load_account(session, name)
        had = session.get(TotpCredential, member.id) is not None
        _remove(session, member.id)
        if had:
            svc.audit(session, "account.totp.reset", name, role=str(member.role))
    return had


def _remove(session: Session, member_id: int) -> None:
    session.execute(delete(TotpRecoveryCode).where(TotpRecoveryCode.member_id == member_id))
    session.execute(delete(PendingLogin).where(PendingLogin.member_id == member_id))
    session.execute(delete(TotpCredential).where(TotpCredential.member_id == member_id))


def totp_members(svc: Services) -> set[str]:
    """Names of the members who log in with TOTP (for `labgpu admin list`)."""
    from labgpu.store.models import Member

    with svc.session() as session:
        return set(
            session.scalars(
                select(Member.name)
                .join(TotpCredential, TotpCredential.member_id == Member.id)
                .where(TotpCredential.secret.is_not(None))
            )
        )
