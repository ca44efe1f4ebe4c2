"""Signing on: every way of proving who one is (a local password, an LDAP password, OIDC, CAS) ends in
:func:`complete_login`, the ONE place that turns a proven person into a login session (a second factor
hooks in there).

- :func:`password_login`: the log-in form. A local account's password first, then the directory
  (LDAP/AD) when one is configured; with ``signon_required`` a member's local password no longer works
  (admins' does, so they get in while the directory is down).
- :func:`signon_login`: a person an OIDC provider or the CAS server vouched for.

Either gives a :class:`NewLogin` for a linked identity, an :class:`Unlinked` person (who may apply, the
form prefilled) or a :class:`Waiting` one (their application is not through yet). Every attempt is
counted by the same throttle as local log-ins (per account and per client address); a failed OIDC or
CAS answer counts against the address.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from labgpu.errors import N_
from labgpu.services.context import Services
from labgpu.services.portal._accounts import address_key
from labgpu.services.portal._claims import BackendDown, Claims, SignOnFailed
from labgpu.services.portal._complete import Proof, complete_login
from labgpu.services.portal._identities import Linked, Unlinked, Waiting, link_identity, resolve_identity
from labgpu.services.portal._ldap import ldap_check, ldap_enabled
from labgpu.services.portal._logins import (
    ATTEMPT_RETENTION,
    MAX_NAME_TRIED,
    LoginFailed,
    NewLogin,
    _check_throttle,
    _window,
)
from labgpu.services.portal._passwords import hash_password, password_hasher, verify_password
from labgpu.services.portal._totp import SecondStep
from labgpu.store.models import Account, LoginAttempt, Member, Role, utcnow

log = logging.getLogger(__name__)

LOCAL_REFUSED = N_(
    "members of this lab log in with the campus sign-on (the buttons below, or your directory password)"
)


SignOnResult = NewLogin | SecondStep | Unlinked | Waiting


def _tried(name: str) -> str:
    """The name as counted and looked up: lower-case, at most 64 characters, and without control characters
    (a NUL cannot even be stored in PostgreSQL; such a name matches nobody, and its failure still counts)."""
    text = name.strip().lower()
    clean = "".join(ch for ch in text if ch.isprintable())
    return (clean if clean == text else "\ufffd" + clean)[:MAX_NAME_TRIED]


def _sweep(session: Session, svc: Services, now: datetime) -> None:
    session.execute(
        delete(LoginAttempt).where(LoginAttempt.at < now - max(ATTEMPT_RETENTION, _window(svc.settings) * 2))
    )


def password_login(
    svc: Services, *, name: str, password: str, source_address: str | None, user_agent: str | None
) -> SignOnResult:
    """The log-in form: a local account's password, else the directory's (LDAP/AD).

    Raises Throttled (before any password is checked), LoginFailed (wrong name or password, never saying
    which; a disabled account; a member's local password under ``signon_required``), BackendDown (the
    directory is down and no local account took the password). Audited, failures too."""
    settings = svc.settings
    tried = _tried(name)
    address = address_key(source_address)
    now = utcnow()
    proof = Proof("password", source_address, user_agent)
    failure = N_("wrong name or password")
    with svc.session() as session:
        _sweep(session, svc, now)
        _check_throttle(session, settings, tried, address, now)
        row = session.execute(
            select(Member, Account).join(Account, Account.member_id == Member.id).where(Member.name == tried)
        ).first()
        member, account = (row[0], row[1]) if row is not None else (None, None)
        local_allowed = member is not None and (not settings.signon_required or member.role == Role.ADMIN)
        ok = verify_password(account.password_hash if account and local_allowed else None, password)
        if ok and member is not None and account is not None:
            if account.disabled_at is not None:
                failure = N_("this account is disabled; ask an admin to enable it")
            else:
                assert account.password_hash is not None
                if password_hasher().check_needs_rehash(account.password_hash):
                    account.password_hash = hash_password(password)
                session.add(LoginAttempt(at=now, account=tried, source_address=address, succeeded=True))
                return complete_login(svc, session, member, account, proof)
        elif (
            member is not None
            and not local_allowed
            and account is not None
            and verify_password(account.password_hash, password)
        ):
            failure = LOCAL_REFUSED
    claims: Claims | None = None
    down: BackendDown | None = None
    if ldap_enabled(settings) and failure != LOCAL_REFUSED:
        try:
            claims = ldap_check(settings, name, password)
        except BackendDown as exc:
            log.warning("LDAP log-in of %r: %s", tried, exc.log_message)
            down = exc
    with svc.session() as session:
        if claims is None:
            if down is None:  # a directory that did not answer says nothing about the password
                session.add(LoginAttempt(at=now, account=tried, source_address=address, succeeded=False))
            svc.audit(
                session, "account.login.failed", tried, reason=failure if down is None else down.message
            )
    if claims is None:
        if down is not None:
            raise down
        raise LoginFailed(failure)
    return signon_login(svc, claims, replace(proof, method="ldap"), counted_as=tried)


def signon_login(
    svc: Services, claims: Claims, proof: Proof, *, counted_as: str | None = None
) -> SignOnResult:
    """A person an outside backend vouched for: logged in when their identity is linked to an account
    (an admin account made at once for a member of ``signon_admin_groups``), else Unlinked (they may
    apply) or Waiting (their application is not through). Raises LoginFailed (a disabled account, not in
    ``signon_member_groups``). Audited."""
    now = utcnow()
    address = address_key(proof.source_address)
    key = counted_as or f"{claims.provider}:{claims.subject}"[:64]
    with svc.session() as session:
        outcome = resolve_identity(svc, session, claims)
        ok = isinstance(outcome, Linked | Unlinked | Waiting)
        session.add(LoginAttempt(at=now, account=key, source_address=address, succeeded=ok))
        if isinstance(outcome, Linked):
            return complete_login(svc, session, outcome.member, outcome.account, proof)
        if isinstance(outcome, Unlinked | Waiting):
            return outcome
        svc.audit(session, "account.login.failed", claims.name or key, reason=outcome, method=proof.method)
    raise LoginFailed(outcome)


def check_signon_throttle(svc: Services, provider: str, source_address: str | None) -> None:
    """Raise Throttled when this address has failed too many OIDC/CAS sign-ons (or log-ins) lately."""
    address = address_key(source_address)
    now = utcnow()
    with svc.session() as session:
        _check_throttle(session, svc.settings, f"{provider}@{address}"[:64], address, now)


def record_signon_failure(
    svc: Services, provider: str, source_address: str | None, error: SignOnFailed
) -> None:
    """Count a refused OIDC/CAS answer (a wrong state or nonce, a bad ticket) against the address. Audited."""
    address = address_key(source_address)
    with svc.session() as session:
        session.add(
            LoginAttempt(
                at=utcnow(), account=f"{provider}@{address}"[:64], source_address=address, succeeded=False
            )
        )
        svc.audit(session, "account.login.failed", provider, reason=error.log_message, method=provider)


def link_with_password(
    svc: Services, claims: Claims, *, name: str, password: str, proof: Proof
) -> NewLogin | SecondStep:
    """Link a sign-on identity to an existing account whose password the person knows (also a member's
    under ``signon_required``: this is how local accounts move to sign-on), and log them in.

    Throttled and counted like a log-in. Raises Throttled, LoginFailed (wrong name or password, a
    disabled account), Conflict (the identity belongs to another account). Audited."""
    tried = _tried(name)
    address = address_key(proof.source_address)
    now = utcnow()
    with svc.session() as session:
        _check_throttle(session, svc.settings, tried, address, now)
        row = session.execute(
            select(Member, Account).join(Account, Account.member_id == Member.id).where(Member.name == tried)
        ).first()
        member, account = (row[0], row[1]) if row is not None else (None, None)
        ok = verify_password(account.password_hash if account else None, password)
        failure = N_("wrong name or password")
        if ok and account is not None and account.disabled_at is not None:
            ok, failure = False, N_("this account is disabled; ask an admin to enable it")
        if ok and member is not None and account is not None:
            link_identity(svc, session, claims, member)
            session.add(LoginAttempt(at=now, account=tried, source_address=address, succeeded=True))
            return complete_login(
                svc, session, member, account, replace(proof, method=f"{claims.provider}+password")
            )
    with svc.session() as session:
        session.add(LoginAttempt(at=now, account=tried, source_address=address, succeeded=False))
        svc.audit(session, "account.login.failed", tried, reason=failure, method="link")
    raise LoginFailed(failure)
