"""``labgpu auth test NAME``: ask every configured log-in backend about a name and password, and say
which accepted it and why the others did not. Nothing is written: no session, no throttle count."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from labgpu.services.context import Services
from labgpu.services.portal._claims import BackendDown
from labgpu.services.portal._identities import group_verdict
from labgpu.services.portal._ldap import ldap_check, ldap_enabled
from labgpu.services.portal._passwords import verify_password
from labgpu.store.models import Account, Member, Role
from labgpu.store.models_signon import SignOnIdentity


@dataclass(frozen=True)
class BackendVerdict:
    backend: str  # "local", "ldap", "oidc:NAME", "cas"
    accepted: bool
    detail: str


def check_backends(svc: Services, *, name: str, password: str | None) -> list[BackendVerdict]:
    """What each backend says about ``name`` (and ``password``; None: the browser-only backends are
    described, the password ones skipped). OIDC and CAS need a browser: their settings are reported."""
    settings = svc.settings
    name = name.strip()
    verdicts: list[BackendVerdict] = []
    with svc.session() as session:
        row = session.execute(
            select(Member, Account)
            .outerjoin(Account, Account.member_id == Member.id)
            .where(Member.name == name)
        ).first()
        linked = 0
        if row is not None:
            linked = len(
                list(session.scalars(select(SignOnIdentity.id).where(SignOnIdentity.member_id == row[0].id)))
            )
    if row is None:
        verdicts.append(BackendVerdict("local", False, "no labgpu account of that name"))
    else:
        member, account = row
        if account is None or account.password_hash is None:
            verdicts.append(BackendVerdict("local", False, "the account has no portal password"))
        elif account.disabled_at is not None:
            verdicts.append(BackendVerdict("local", False, "the account is disabled"))
        elif settings.signon_required and member.role != Role.ADMIN:
            verdicts.append(
                BackendVerdict("local", False, "signon_required: members cannot use local passwords")
            )
        elif password is None:
            verdicts.append(BackendVerdict("local", False, "no password given"))
        elif verify_password(account.password_hash, password):
            verdicts.append(
                BackendVerdict("local", True, f"password accepted ({member.role}, {linked} sign-on link(s))")
            )
        else:
            verdicts.append(BackendVerdict("local", False, "wrong password"))
    if not ldap_enabled(settings):
        verdicts.append(BackendVerdict("ldap", False, "not configured (ldap_url is empty)"))
    elif password is None:
        verdicts.append(BackendVerdict("ldap", False, "no password given"))
    else:
        try:
            claims = ldap_check(settings, name, password)
        except BackendDown as exc:
            verdicts.append(BackendVerdict("ldap", False, f"server unreachable: {exc.log_message}"))
        else:
            if claims is None:
                verdicts.append(
                    BackendVerdict("ldap", False, "unknown name, several matches, or wrong password")
                )
            else:
                groups = ", ".join(sorted(claims.groups)) or "none"
                verdicts.append(
                    BackendVerdict(
                        "ldap",
                        True,
                        f"subject {claims.subject}, e-mail {claims.email or '-'}, groups {groups}; "
                        f"group rules: {group_verdict(svc, claims)}",
                    )
                )
    for provider in settings.oidc_providers:
        verdicts.append(
            BackendVerdict(f"oidc:{provider.name}", False, f"needs a browser (issuer {provider.issuer})")
        )
    if settings.cas_url:
        verdicts.append(BackendVerdict("cas", False, f"needs a browser (server {settings.cas_url})"))
    return verdicts
