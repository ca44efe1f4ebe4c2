"""The end of every successful primary log-in (local password, LDAP, OIDC, CAS): :func:`complete_login`,
the ONE function that turns a proven person into a login session. A second factor hooks in here."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.orm import Session

from labgpu.services.context import Actor, Services
from labgpu.services.portal._accounts import Identity, address_key, token_digest
from labgpu.services.portal._logins import NewLogin, _start_session
from labgpu.store.models import Account, Member, Role, utcnow


@dataclass(frozen=True)
class Proof:
    """How a person proved who they are, for the audit log and for what comes after (a second factor)."""

    method: str  # "password", "ldap", "oidc:NAME", "cas"
    source_address: str | None
    user_agent: str | None


def complete_login(
    svc: Services, session: Session, member: Member, account: Account, proof: Proof
) -> NewLogin:
    """THE end of every successful primary log-in: a new login session for ``member`` (a new id every
    time: no fixation), the account's last log-in, and ``account.login`` in the audit log (with the
    method). Runs in the caller's transaction."""
    now = utcnow()
    account.last_login_at = now
    token = _start_session(
        session, svc.settings, member.id, address_key(proof.source_address), proof.user_agent, now
    )
    # The actor is the member who just proved who they are, not the anonymous visitor.
    as_member = Actor(member.name, svc.actor.source_address, member.role == Role.ADMIN)
    replace(svc, actor=as_member).audit(session, "account.login", member.name, method=proof.method)
    identity = Identity(member.id, member.name, str(member.role), "session", session_id=token_digest(token))
    return NewLogin(token=token, identity=identity)
