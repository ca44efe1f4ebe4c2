"""Applications: a visitor asks for an account and a container; an admin approves or rejects.

The flow, each step written to the store before the next begins, so that a crash anywhere is finished by
running ``provision_application`` again (the portal does it at start-up for every application that is
``approved`` but not ``done``):

1. :func:`submit` (a visitor): validated like ``member add`` (name rules, the name not taken by a member
   or by another open application), the password checked by the same policy as every portal password and
   kept only as its argon2id hash. Throttled per client address (``apply_max_per_hour``).
2. :func:`approve` (an admin, optionally changing template, CPU, memory and GPUs) writes the decision;
   :func:`reject` writes it with a reason for the applicant.
3. :func:`~labgpu.services.portal._provisioning.provision_application` (in the background) adds the member (:func:`members.add_member`), waits
   for sshd, moves the password HASH to the member's portal account (the password itself was never
   stored), and records each step in ``Application.progress``. A failure leaves the application
   ``failed`` with the error as its progress; :func:`retry` queues it again.
4. Mail (:mod:`labgpu.services.portal._application_mail`): ``notify_admins`` for a new application,
   ``notify_applicant`` for the decision. The
   approval mail holds the portal's address and the connection sheet, never a container password: the
   member sets their container's first-login password (or adds an SSH key) on their own page.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from labgpu.domain.members import (
    format_size,
    parse_gpu_request,
    parse_size,
    validate_cpu,
    validate_member_name,
)
from labgpu.errors import N_, BadInput, Conflict, NotFound
from labgpu.services.context import Services
from labgpu.services.portal._accounts import Forbidden, _check_email
from labgpu.services.portal._logins import Throttled
from labgpu.services.portal._passwords import check_password_strength, hash_password
from labgpu.store.models import Application, ApplicationStatus, Member, utcnow

MAX_TEXT = 128  # supervisor, group
MAX_REASON = 2000
OPEN_STATUSES = (ApplicationStatus.PENDING, ApplicationStatus.APPROVED, ApplicationStatus.FAILED)

# Progress shown to admins (the web layer translates these).
QUEUED = N_("queued")
CREATING = N_("creating the container")
WAITING_SSH = N_("waiting for sshd")
ACCOUNT = N_("creating the portal account")
DONE = N_("done")
PROGRESS_STEPS = (QUEUED, CREATING, WAITING_SSH, ACCOUNT, DONE)


@dataclass(frozen=True)
class ApplicationInfo:
    id: int
    name: str
    email: str
    supervisor: str | None
    group_name: str | None
    reason: str | None
    status: str
    template: str | None
    cpu: int | None
    memory_bytes: int | None
    gpus: str | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    progress: str | None
    source_address: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.status in (ApplicationStatus.DONE, ApplicationStatus.REJECTED)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Overrides:
    """What an admin changes when approving; None: the defaults (settings)."""

    template: str | None = None
    cpu: int | None = None
    memory_bytes: int | None = None
    gpus: str | None = None


def _info(row: Application) -> ApplicationInfo:
    return ApplicationInfo(
        id=row.id,
        name=row.name,
        email=row.email,
        supervisor=row.supervisor,
        group_name=row.group_name,
        reason=row.reason,
        status=str(row.status),
        template=row.template,
        cpu=row.cpu_limit,
        memory_bytes=row.memory_limit_bytes,
        gpus=row.gpu_spec,
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_reason=row.decision_reason,
        progress=row.progress,
        source_address=row.source_address,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _text(value: str | None, what: str, limit: int = MAX_TEXT) -> str | None:
    value = (value or "").strip()
    if len(value) > limit:
        raise BadInput(f"the {what} is too long (at most {limit} characters)")
    if any(ord(c) < 32 and c not in "\n\r\t" for c in value):
        raise BadInput(f"the {what} contains control characters")
    return value or None


# Submitting -----------------------------------------------------------------------------------------


def submit(
    svc: Services,
    *,
    name: str,
    email: str,
    password: str,
    supervisor: str | None = None,
    group_name: str | None = None,
    reason: str | None = None,
    source_address: str | None = None,
) -> ApplicationInfo:
    """A visitor applies for an account and a container. Returns the pending application.

    Raises BadInput (name, e-mail, texts), WeakPassword, Conflict (the name is taken by a member or an
    open application), Throttled (too many applications from this address in the last hour), Forbidden
    when applications are closed. Audited as ``application.submit``. Sends no mail (see notify_admins)."""
    if not svc.settings.applications_open:
        raise Forbidden(N_("this portal does not take applications; ask an admin of your lab for an account"))
    name = (name or "").strip()
    validate_member_name(name)
    checked_email = _check_email(email)
    if checked_email is None:
        raise BadInput(N_("an e-mail address is required: the decision is sent there"))
    supervisor = _text(supervisor, "supervisor")
    group_name = _text(group_name, "group")
    reason = _text(reason, "reason", MAX_REASON)
    check_password_strength(password, name=name)
    address = (source_address or "unknown")[:64]
    now = utcnow()
    with svc.session() as session:
        _check_throttle(svc, session, address, now)
        _check_name_free(session, name)
    password_hash = hash_password(password)  # slow: outside the transaction
    with svc.session() as session:
        _check_name_free(session, name)  # again: another applicant may have been quicker
        row = Application(
            name=name,
            email=checked_email,
            password_hash=password_hash,
            supervisor=supervisor,
            group_name=group_name,
            reason=reason,
            status=ApplicationStatus.PENDING,
            source_address=address,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        session.flush()
        svc.audit(session, "application.submit", name, application=row.id, email=checked_email)
        return _info(row)


def _check_throttle(svc: Services, session: Any, address: str, now: datetime) -> None:
    since = now - timedelta(hours=1)
    rows = list(
        session.scalars(
            select(Application.created_at)
            .where(Application.source_address == address, Application.created_at > since)
            .order_by(Application.created_at)
        )
    )
    limit = svc.settings.apply_max_per_hour
    if len(rows) >= limit:
        frees_at = rows[len(rows) - limit] + timedelta(hours=1)
        wait = max(1, int((frees_at - now).total_seconds()) + 1)
        minutes = max(1, (wait + 59) // 60)
        raise Throttled(
            f"too many applications from your address; try again in {minutes} minute"
            f"{'s' if minutes != 1 else ''}",
            retry_after=wait,
        )
    pending = session.scalar(
        select(func.count()).select_from(Application).where(Application.status == ApplicationStatus.PENDING)
    )
    if pending >= svc.settings.apply_max_pending:
        raise Throttled("too many applications are waiting for an admin; try again later", retry_after=3600)


def _check_name_free(session: Any, name: str) -> None:
    if session.scalar(select(Member.id).where(Member.name == name)) is not None:
        raise Conflict(f"the name {name} is taken; choose another")
    taken = session.scalar(
        select(Application.id).where(Application.name == name, Application.status.in_(OPEN_STATUSES))
    )
    if taken is not None:
        raise Conflict(f"the name {name} is taken; choose another")


# Reading ---------------------------------------------------------------------------------------------


def list_applications(svc: Services, *, status: str | None = None, limit: int = 500) -> list[ApplicationInfo]:
    """Applications, open ones first (pending, approved, failed), then the newest. Raises BadInput."""
    query = select(Application)
    if status:
        try:
            query = query.where(Application.status == ApplicationStatus(status))
        except ValueError:
            raise BadInput(f"unknown status {status!r}") from None
    with svc.session() as session:
        rows = [_info(r) for r in session.scalars(query.order_by(Application.id.desc()).limit(limit))]
    return sorted(rows, key=lambda a: (a.finished, -a.id))


def get_application(svc: Services, application_id: int) -> ApplicationInfo:
    """One application. Raises NotFound."""
    with svc.session() as session:
        return _info(_load(session, application_id))


def _load(session: Any, application_id: int) -> Application:
    row = session.get(Application, application_id)
    if row is None:
        raise NotFound(f"no application {application_id}")
    assert isinstance(row, Application)
    return row


# Deciding --------------------------------------------------------------------------------------------


def parse_overrides(
    *,
    template: str | None = None,
    cpu: int | str | None = None,
    memory: str | None = None,
    gpus: str | None = None,
) -> Overrides:
    """Check an admin's changes to an application (empty values: the defaults). Raises BadInput."""
    template = (template or "").strip() or None
    if template is not None and (
        len(template) > 255 or not template.isprintable() or any(c.isspace() for c in template)
    ):
        raise BadInput(f"invalid template {template[:60]!r}")
    cpu_value = None
    if cpu is not None and str(cpu).strip():
        text = str(cpu).strip()
        if not text.isdigit():
            raise BadInput(f"invalid CPU limit {text[:20]!r}: give a number of cores")
        cpu_value = validate_cpu(int(text))
    memory_bytes = parse_size(memory, what="memory limit") if memory and memory.strip() else None
    gpu_text = str(parse_gpu_request(gpus)) if gpus and gpus.strip() else None
    return Overrides(template=template, cpu=cpu_value, memory_bytes=memory_bytes, gpus=gpu_text)


def approve(svc: Services, application_id: int, overrides: Overrides | None = None) -> ApplicationInfo:
    """Approve a pending application (with the admin's changes) and queue its provisioning.

    Only the decision is written here; :func:`provision_application` does the work (the portal runs it in
    the background). Raises NotFound, Conflict (not pending, or the name was taken meanwhile), BadInput
    (an unknown template). Audited as ``application.approve``."""
    overrides = overrides or Overrides()
    template = overrides.template or svc.settings.default_template
    with svc.session() as session:
        row = _load(session, application_id)
        if row.status != ApplicationStatus.PENDING:
            raise Conflict(f"application {application_id} is {row.status}, not pending")
        name = row.name
        if session.scalar(select(Member.id).where(Member.name == name)) is not None:
            raise Conflict(f"a member named {name} exists already; reject the application with a reason")
    if svc.runtime.images.resolve_alias(template) is None:
        raise BadInput(f"unknown template {template!r}", hint="see the templates page")
    now = utcnow()
    with svc.session() as session:
        row = _load(session, application_id)
        if row.status != ApplicationStatus.PENDING:  # another admin was quicker
            raise Conflict(f"application {application_id} is {row.status}, not pending")
        row.status = ApplicationStatus.APPROVED
        row.template = overrides.template
        row.cpu_limit = overrides.cpu
        row.memory_limit_bytes = overrides.memory_bytes
        row.gpu_spec = overrides.gpus
        row.decided_by = svc.actor.name
        row.decided_at = now
        row.progress = QUEUED
        svc.audit(
            session,
            "application.approve",
            name,
            application=application_id,
            template=template,
            cpu=overrides.cpu,
            memory=format_size(overrides.memory_bytes) if overrides.memory_bytes else None,
            gpus=overrides.gpus,
        )
        return _info(row)


def reject(svc: Services, application_id: int, *, reason: str) -> ApplicationInfo:
    """Reject a pending application with a reason (sent to the applicant). The password hash is dropped.

    Raises NotFound, Conflict (not pending), BadInput (no reason). Audited as ``application.reject``."""
    text = _text(reason, "reason", MAX_REASON)
    if not text:
        raise BadInput(N_("give the applicant a reason for the rejection"))
    with svc.session() as session:
        row = _load(session, application_id)
        if row.status != ApplicationStatus.PENDING:
            raise Conflict(f"application {application_id} is {row.status}, not pending")
        row.status = ApplicationStatus.REJECTED
        row.decision_reason = text
        row.decided_by = svc.actor.name
        row.decided_at = utcnow()
        row.password_hash = None
        svc.audit(session, "application.reject", row.name, application=application_id, reason=text)
        return _info(row)


def retry(svc: Services, application_id: int) -> ApplicationInfo:
    """Queue a failed application's provisioning again. Raises NotFound, Conflict (not failed).
    Audited as ``application.retry``."""
    with svc.session() as session:
        row = _load(session, application_id)
        if row.status != ApplicationStatus.FAILED:
            raise Conflict(f"application {application_id} is {row.status}, not failed")
        row.status = ApplicationStatus.APPROVED
        row.progress = QUEUED
        svc.audit(session, "application.retry", row.name, application=application_id)
        return _info(row)


def unfinished(svc: Services) -> list[int]:
    """Approved applications whose provisioning has not finished (to resume at start-up)."""
    with svc.session() as session:
        return list(
            session.scalars(
                select(Application.id)
                .where(Application.status == ApplicationStatus.APPROVED)
                .order_by(Application.id)
            )
        )
