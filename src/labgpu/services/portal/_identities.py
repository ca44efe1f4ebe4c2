"""Sign-on identities and the accounts they open: linked by the provider's stable subject, never by a
name. Someone unknown may apply (the form prefilled from what the backend said) unless the group rules
say otherwise: ``signon_member_groups`` (who may apply at all), ``signon_approve_groups`` (approved at
once), ``signon_admin_groups`` (an admin account at once). An existing account is linked by logging in
to it with its password once (:func:`link_with_password`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labgpu.domain.members import validate_member_name
from labgpu.errors import N_, BadInput, Conflict, LabgpuError
from labgpu.services.context import Actor, Services
from labgpu.services.portal._accounts import Forbidden, _check_email
from labgpu.services.portal._applications import (
    MAX_REASON,
    OPEN_STATUSES,
    ApplicationInfo,
    _check_name_free,
    _check_throttle,
    _info,
    _text,
)
from labgpu.services.portal._claims import Claims
from labgpu.services.portal._complete import Proof, complete_login
from labgpu.services.portal._logins import NewLogin
from labgpu.services.portal._totp import SecondStep
from labgpu.store.models import Account, Application, ApplicationStatus, Member, MemberState, Role, utcnow
from labgpu.store.models_signon import SignOnIdentity

NOT_IN_GROUP = N_("your sign-on account is not in a group that may use this portal; ask an admin of your lab")
TAKEN = N_(
    "the name %(name)s is taken; choose another, or if that account is yours, link it below with its password"
)
DISABLED = N_("this account is disabled; ask an admin to enable it")


@dataclass(frozen=True)
class Linked:
    member: Member
    account: Account


@dataclass(frozen=True)
class Unlinked:
    """Someone the backend vouched for without a labgpu account: they may apply, the form prefilled."""

    claims: Claims
    admin: bool = False  # in signon_admin_groups: the form makes an admin account, not an application


@dataclass(frozen=True)
class Waiting:
    """Someone whose application (made at an earlier sign-on) is not through yet."""

    application: ApplicationInfo


def _groups(setting: str) -> frozenset[str]:
    return frozenset(g.strip().lower() for g in setting.split(",") if g.strip())


def group_verdict(svc: Services, claims: Claims) -> str:
    """What the group rules make of ``claims``: "admin", "approve", "apply" or "refuse"."""
    settings = svc.settings
    if claims.groups & _groups(settings.signon_admin_groups):
        return "admin"
    if claims.groups & _groups(settings.signon_approve_groups):
        return "approve"
    allowed = _groups(settings.signon_member_groups)
    if allowed and not claims.groups & allowed:
        return "refuse"
    return "apply"


def suggest_name(claims: Claims) -> str:
    """A valid member name made from the backend's name (or e-mail): "Dave.Smith" becomes "dave-smith"."""
    for source in (claims.name, (claims.email or "").split("@")[0]):
        text = re.sub(r"[^a-z0-9]+", "-", source.lower()).strip("-")
        text = re.sub(r"^[^a-z]+", "", text)[:32].rstrip("-")
        if len(text) >= 2:
            return text
    return ""


def _record(session: Session, claims: Claims) -> SignOnIdentity | None:
    return session.scalars(
        select(SignOnIdentity).where(
            SignOnIdentity.provider == claims.provider, SignOnIdentity.subject == claims.subject
        )
    ).first()


def _touch(row: SignOnIdentity, claims: Claims) -> None:
    row.email = claims.email
    row.display_name = claims.display_name
    row.last_login_at = utcnow()


def resolve_identity(svc: Services, session: Session, claims: Claims) -> Linked | Unlinked | Waiting | str:
    """Whose account ``claims`` opens (Linked), or what else: Unlinked, Waiting, or a refusal's message.
    Links the identity of an application that has been provisioned since; makes the admin account of a
    member of ``signon_admin_groups`` whose name is free."""
    row = _record(session, claims)
    if row is not None and row.member_id is None and row.application_id is not None:
        application = session.get(Application, row.application_id)
        if application is None or application.status == ApplicationStatus.REJECTED:
            row.application_id = None  # they may apply again
        elif application.status == ApplicationStatus.DONE:
            member = session.scalars(select(Member).where(Member.name == application.name)).first()
            if member is not None:
                row.member_id = member.id
                svc.audit(session, "account.identity.link", member.name, provider=claims.provider)
        else:
            return Waiting(_info(application))
    if row is not None and row.member_id is not None:
        member = session.get(Member, row.member_id)
        assert member is not None
        account = session.get(Account, member.id)
        if account is None:
            account = Account(member_id=member.id)
            session.add(account)
        if account.disabled_at is not None:
            return DISABLED
        _touch(row, claims)
        return Linked(member, account)
    verdict = group_verdict(svc, claims)
    if verdict == "refuse":
        return NOT_IN_GROUP
    if verdict == "admin":
        name = suggest_name(claims)
        if name == claims.name and _name_free(session, name):
            member, account = _make_admin(svc, session, claims, name)
            return Linked(member, account)
        return Unlinked(claims, admin=True)
    if verdict == "approve" and claims.email and svc.settings.applications_open:
        # Approved by the group rule: no form to fill in when their own name will do.
        name = suggest_name(claims)
        if name == claims.name and _name_free(session, name):
            application = _new_application(
                svc,
                session,
                claims,
                name=name,
                email=claims.email,
                address=svc.actor.source_address or "unknown",
                approve=True,
            )
            return Waiting(_info(application))
    return Unlinked(claims)


def _name_free(session: Session, name: str) -> bool:
    try:
        validate_member_name(name)
        _check_name_free(session, name)
    except LabgpuError:
        return False
    return True


def name_problem(svc: Services, original: str, *, proposed: str) -> LabgpuError | None:
    """Why ``proposed`` (made from the sign-on's name ``original``) will not do or was changed, as an
    error to show on the form with the way forward; None when it is fine as it is."""
    if proposed != original:
        try:
            validate_member_name(original)
        except BadInput:
            return BadInput(
                N_(
                    "%(original)s is not a valid Linux user name (2-32 lower-case letters, digits and "
                    "hyphens, starting with a letter); %(proposed)s is proposed instead: keep it or choose "
                    "another"
                ),
                values={"original": original[:64], "proposed": proposed or "-"},
            )
    with svc.session() as session:
        if proposed and not _name_free(session, proposed):
            return Conflict(TAKEN, values={"name": proposed})
    return None


def _make_admin(svc: Services, session: Session, claims: Claims, name: str) -> tuple[Member, Account]:
    member = Member(name=name, email=claims.email, role=Role.ADMIN, state=MemberState.STOPPED)
    session.add(member)
    session.flush()
    account = Account(member_id=member.id)
    session.add(account)
    _link(session, claims, member_id=member.id)
    svc.audit(
        session, "account.create", name, role=str(Role.ADMIN), provider=claims.provider, via="group rule"
    )
    return member, account


def _link(
    session: Session, claims: Claims, *, member_id: int | None = None, application_id: int | None = None
) -> None:
    row = _record(session, claims)
    if row is None:
        row = SignOnIdentity(provider=claims.provider, subject=claims.subject)
        session.add(row)
    row.member_id = member_id
    row.application_id = application_id
    _touch(row, claims)


def _new_application(
    svc: Services,
    session: Session,
    claims: Claims,
    *,
    name: str,
    email: str,
    address: str,
    approve: bool,
    supervisor: str | None = None,
    group_name: str | None = None,
    reason: str | None = None,
) -> Application:
    """An application linked to ``claims`` (no password: they log in through the backend); approved at
    once by a group rule when ``approve``. Audited."""
    now = utcnow()
    row = Application(
        name=name,
        email=email,
        password_hash=None,
        supervisor=supervisor,
        group_name=group_name,
        reason=reason,
        status=ApplicationStatus.APPROVED if approve else ApplicationStatus.PENDING,
        decided_by="sign-on group rule" if approve else None,
        decided_at=now if approve else None,
        progress=N_("queued") if approve else None,
        source_address=address,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    _link(session, claims, application_id=row.id)
    svc.audit(session, "application.submit", name, application=row.id, email=email, provider=claims.provider)
    if approve:
        svc.audit(session, "application.approve", name, application=row.id, via="sign-on group rule")
    return row


def apply_with_identity(
    svc: Services,
    claims: Claims,
    *,
    name: str,
    email: str,
    supervisor: str | None = None,
    group_name: str | None = None,
    reason: str | None = None,
    proof: Proof,
) -> ApplicationInfo | NewLogin | SecondStep:
    """The application of someone who signed on (no password: they log in through the backend). The
    identity is linked to it, and to the member once the member is made.

    Members of ``signon_approve_groups`` are approved at once (the caller queues the provisioning);
    members of ``signon_admin_groups`` get an admin account instead, and are logged in (NewLogin). Raises BadInput (the name
    is not a valid Linux user name, the e-mail, texts), Conflict (the name is taken; the message says
    how to go on), Forbidden (applications closed, or not in ``signon_member_groups``), Throttled.
    Audited."""
    verdict = group_verdict(svc, claims)
    if verdict == "refuse":
        raise Forbidden(NOT_IN_GROUP)
    if verdict != "admin" and not svc.settings.applications_open:
        raise Forbidden(N_("this portal does not take applications; ask an admin of your lab for an account"))
    name = (name or "").strip()
    validate_member_name(name)
    if not (email or "").isprintable():
        raise BadInput(N_("the e-mail address contains control characters"))
    checked_email = _check_email(email)
    if checked_email is None:
        raise BadInput(N_("an e-mail address is required: the decision is sent there"))
    supervisor = _text(supervisor, "supervisor")
    group_name = _text(group_name, "group")
    reason = _text(reason, "reason", MAX_REASON)
    address = (proof.source_address or "unknown")[:64]
    now = utcnow()
    try:
        with svc.session() as session:
            existing = _record(session, claims)
            if existing is not None and (
                existing.member_id is not None or existing.application_id is not None
            ):
                raise Conflict(N_("you have applied already; log in again to see how it stands"))
            _check_throttle(svc, session, address, now)
            try:
                _check_name_free(session, name)
            except Conflict:
                raise Conflict(TAKEN, values={"name": name}) from None
            if verdict == "admin":
                member, account = _make_admin(svc, session, claims, name)
                return complete_login(svc, session, member, account, proof)
            row = _new_application(
                svc,
                session,
                claims,
                name=name,
                email=checked_email,
                supervisor=supervisor,
                group_name=group_name,
                reason=reason,
                address=address,
                approve=verdict == "approve",
            )
            return _info(row)
    except IntegrityError:
        raise Conflict(N_("you have applied already; log in again to see how it stands")) from None


def link_identity(svc: Services, session: Session, claims: Claims, member: Member) -> None:
    """Link ``claims`` to ``member`` (who just proved the account is theirs). Raises Conflict when the
    identity is linked to someone else already. Audited."""
    row = _record(session, claims)
    if row is not None and row.member_id not in (None, member.id):
        raise Conflict(N_("this sign-on is linked to another account already"))
    if row is not None and row.application_id is not None:
        application = session.get(Application, row.application_id)
        if application is not None and application.status in OPEN_STATUSES:
            raise Conflict(N_("you have applied already; log in again to see how it stands"))
    _link(session, claims, member_id=member.id)
    # The member proved the account is theirs (its password): the change is theirs.
    as_member = replace(svc, actor=Actor(member.name, svc.actor.source_address, member.role == Role.ADMIN))
    as_member.audit(session, "account.identity.link", member.name, provider=claims.provider)
