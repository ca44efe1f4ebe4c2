"""The end of every successful primary log-in (local password, LDAP, OIDC, CAS): :func:`complete_login`,
the ONE function that turns a proven person into a login session. A second factor hooks in here."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from labgpu.services.context import Actor, Services
from labgpu.services.portal._accounts import Identity, address_key, token_digest
from labgpu.services.portal._logins import NewLogin, _start_session
from labgpu.services.portal._totp import SecondStep, open_pending_login, totp_enabled
from labgpu.store.models import Account, Member, Role, utcnow


@dataclass(frozen=True)
class Proof:
    """How a person proved who they are, for the audit log and for what comes after (a second factor)."""

    method: str  # "password", "ldap", "oidc:NAME", "cas"
    source_address: str | None
    user_agent: str | None


def complete_login(
    svc: Services, session: Session, member: Member, account: Account, proof: Proof
) -> NewLogin | SecondStep:
    """THE end of every successful primary log-in: a new login session for ``member`` (a new id every
    time: no fixation), the account's last log-in, and ``account.login`` in the audit log (with the
    method). For a member with two-factor log-in, a pending log-in that waits for the code instead
    (:class:`SecondStep`, whatever the first factor: password, LDAP, OIDC or CAS). Runs in the caller's
    transaction."""
    now = utcnow()
    if totp_enabled(session, member.id):
        return open_pending_login(
            svc, session, member_id=member.id, name=member.name, is_admin=member.role == Role.ADMIN, now=now
        )
    account.last_login_at = now
    token = _start_session(
        session, svc.settings, member.id, address_key(proof.source_address), proof.user_agent, now
    )
    # The actor is the member who just proved who they are, not the anonymous visitor.
    as_member = Actor(member.name, svc.actor.source_address, member.role == Role.ADMIN)
    replace(svc, actor=as_member).audit(session, "account.login", member.name, method=proof.method)
    identity = Identity(member.id, member.name, str(member.role), "session", session_id=token_digest(token))
    return NewLogin(token=token, identity=identity)
