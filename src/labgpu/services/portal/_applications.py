"""Applications: a visitor asks for an account and a container; an admin approves or rejects.

The flow, each step written to the store before the next begins, so that a crash anywhere is finished by
running :func:`provision_application` again (the portal does it at start-up for every application that is
``approved`` but not ``done``):

1. :func:`submit` (a visitor): validated like ``member add`` (name rules, the name not taken by a member
   or by another open application), the password checked by the same policy as every portal password and
   kept only as its argon2id hash. Throttled per client address (``apply_max_per_hour``).
2. :func:`approve` (an admin, optionally changing template, CPU, memory and GPUs) writes the decision;
   :func:`reject` writes it with a reason for the applicant.
3. :func:`provision_application` (in the background) adds the member (:func:`members.add_member`), waits
   for sshd, moves the password HASH to the member's portal account (the password itself was never
   stored), and records each step in ``Application.progress``. A failure leaves the application
   ``failed`` with the error as its progress; :func:`retry` queues it again.
4. Mail: :func:`notify_admins` for a new application, :func:`notify_applicant` for the decision. The
   approval mail holds the portal's address and the connection sheet, never a container password: the
   member sets their container's first-login password (or adds an SSH key) on their own page.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from labgpu.domain.members import format_size, parse_gpu_request, parse_size, validate_cpu
from labgpu.errors import N_, BadInput, Conflict, LabgpuError, NotFound, Unavailable
from labgpu.runtime.errors import RuntimeError_
from labgpu.services import mail, members
from labgpu.services.context import Actor, Services
from labgpu.services.portal._accounts import _check_email
from labgpu.services.portal._logins import Throttled
from labgpu.services.portal._passwords import check_password_strength, hash_password
from labgpu.store.models import Account, Application, ApplicationStatus, Member, MemberState, Role, utcnow

log = logging.getLogger(__name__)

MAX_TEXT = 128  # supervisor, group
MAX_REASON = 2000
OPEN_STATUSES = (ApplicationStatus.PENDING, ApplicationStatus.APPROVED, ApplicationStatus.FAILED)

# Progress shown to admins (the web layer translates these).
QUEUED = N_("queued")
CREATING = N_("creating the container")
WAITING_SSH = N_("waiting for sshd")
ACCOUNT = N_("creating the portal account")
DONE = N_("done")
# A daemon's error (it failed an operation, or did not answer) or a container whose sshd did not come up may
# pass: a busy daemon has been seen failing 2 of 50 parallel creates with "readdirent ...: bad file
# descriptor". Such an application is tried again after these pauses before it is marked failed. Wrong
# input (a template that does not exist, a name taken meanwhile) fails at once.
RETRY_DELAYS_S = (5.0, 20.0)
TRANSIENT: tuple[type[LabgpuError], ...] = (RuntimeError_, Unavailable, members.ProvisionError)
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
    from labgpu.domain.members import validate_member_name
    from labgpu.services.portal._accounts import Forbidden

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


# Provisioning ----------------------------------------------------------------------------------------


def _set_progress(
    svc: Services, application_id: int, progress: str, status: ApplicationStatus | None = None
) -> None:
    with svc.session() as session:
        row = _load(session, application_id)
        row.progress = progress[:255]
        if status is not None:
            row.status = status


def provision_application(svc: Services, application_id: int) -> ApplicationInfo:
    """Make the member of an approved application: container, sshd, portal account; then mail them.

    Safe to run again after a crash at any point (each step checks what exists). Waits for the container
    and its sshd. A failure is recorded (status ``failed``, the error as progress) and not raised; an
    application that is not ``approved`` is left as it is. Returns the application afterwards."""
    with svc.session() as session:
        row = _load(session, application_id)
        if row.status != ApplicationStatus.APPROVED:
            return _info(row)
        app = _info(row)
    # The changes are the approving admin's doing (audit), made by the portal in the background.
    worker = dataclasses.replace(svc, actor=Actor(app.decided_by or "system", None, True))
    try:
        for attempt in range(1, len(RETRY_DELAYS_S) + 2):
            try:
                _provision_once(worker, app)
                break
            except TRANSIENT as exc:
                if attempt > len(RETRY_DELAYS_S):
                    raise
                delay = RETRY_DELAYS_S[attempt - 1]
                log.warning(
                    "application %s (%s): %s; trying again in %gs",
                    application_id,
                    app.name,
                    exc.log_message,
                    delay,
                )
                _set_progress(worker, application_id, f"trying again in {delay:g}s after: {exc.message}")
                time.sleep(delay)
    except LabgpuError as exc:
        log.warning("application %s (%s) failed: %s", application_id, app.name, exc.log_message)
        _set_progress(worker, application_id, exc.message, ApplicationStatus.FAILED)
        with worker.session() as session:
            worker.audit(
                session, "application.failed", app.name, application=application_id, error=exc.message
            )
        return get_application(svc, application_id)
    except Exception as exc:  # a bug or an unexpected library error: recorded, the worker goes on
        log.exception("application %s (%s) failed", application_id, app.name)
        _set_progress(
            worker, application_id, f"internal error: {type(exc).__name__}", ApplicationStatus.FAILED
        )
        return get_application(svc, application_id)
    _set_progress(worker, application_id, DONE, ApplicationStatus.DONE)
    done = get_application(svc, application_id)
    notify_applicant(worker, done)
    return done


def _provision_once(worker: Services, app: ApplicationInfo) -> None:
    """One try at the member of ``app``: each step checks what exists, so a second try resumes."""
    _check_member(worker, app)
    _set_progress(worker, app.id, CREATING)
    request = members.validate_request(
        worker,
        name=app.name,
        template=app.template,
        cpu=app.cpu,
        memory=f"{app.memory_bytes}B" if app.memory_bytes else None,
        gpus=app.gpus,
        email=app.email,
    )
    members.add_member(worker, request, wait_ssh=False)
    _set_progress(worker, app.id, WAITING_SSH)
    members.wait_member_ssh(worker, app.name)
    _set_progress(worker, app.id, ACCOUNT)
    _move_password(worker, app.id)


def _check_member(svc: Services, app: ApplicationInfo) -> None:
    """A member of the application's name must be ours: made after the approval (a resumed run)."""
    with svc.session() as session:
        member = session.scalars(select(Member).where(Member.name == app.name)).first()
        if member is None or member.state == MemberState.PROVISIONING:
            return
        if app.decided_at is None or member.created_at < app.decided_at:
            raise Conflict(f"a member named {app.name} was made by someone else meanwhile")


def _move_password(svc: Services, application_id: int) -> None:
    """The applicant's password hash becomes the member's portal password (once; then it is dropped)."""
    now = utcnow()
    with svc.session() as session:
        row = _load(session, application_id)
        member = session.scalars(select(Member).where(Member.name == row.name)).one()
        account = session.get(Account, member.id)
        if account is None:
            account = Account(member_id=member.id)
            session.add(account)
        if row.password_hash is not None:
            account.password_hash = row.password_hash
            account.password_changed_at = now
            row.password_hash = None
            svc.audit(session, "account.create", member.name, role=str(Role.MEMBER), application=row.id)


# Mail ------------------------------------------------------------------------------------------------


def _portal(svc: Services, path: str = "") -> str:
    base = (svc.settings.portal_url or f"http://{svc.settings.web_host}:{svc.settings.web_port}/").rstrip("/")
    return base + path


def _send(svc: Services, *, to: list[str], subject: str, body: str) -> bool:
    try:
        return mail.send_mail(svc.settings, to=to, subject=subject, body=body)
    except LabgpuError as exc:
        log.warning("mail %r to %s not sent: %s", subject, ", ".join(to), exc.message)
        return False


def admin_addresses(svc: Services) -> list[str]:
    with svc.session() as session:
        return [
            e
            for e in session.scalars(
                select(Member.email).where(Member.role == Role.ADMIN).order_by(Member.name)
            )
            if e
        ]


def notify_admins(svc: Services, app: ApplicationInfo) -> bool:
    """Mail every admin with an e-mail address about a new application. Never raises (logs failures)."""
    to = admin_addresses(svc)
    if not to:
        return False
    lines = [
        f"{app.name} <{app.email}> applied for an account and a container.",
        "",
        f"Supervisor: {app.supervisor or '-'}",
        f"Group:      {app.group_name or '-'}",
        f"Address:    {app.source_address or '-'}",
        "",
        "Reason:",
        app.reason or "-",
        "",
        f"Approve or reject it: {_portal(svc, '/admin/applications')}",
    ]
    return _send(svc, to=to, subject=f"[labgpu] new application: {app.name}", body="\n".join(lines))


def notify_applicant(svc: Services, app: ApplicationInfo) -> bool:
    """Mail the applicant the decision: the portal's address and the connection sheet (approved and
    done), or the reason (rejected). Never a password. Never raises (logs failures)."""
    if app.status == ApplicationStatus.REJECTED:
        body = "\n".join(
            [
                f"Hello {app.name},",
                "",
                "your application for a lab account was not approved.",
                "",
                "Reason:",
                app.decision_reason or "-",
                "",
                "Reply to your lab's admins if you have questions.",
            ]
        )
        return _send(svc, to=[app.email], subject="[labgpu] your application was not approved", body=body)
    if app.status != ApplicationStatus.DONE:
        return False
    sheet = members.connection_sheet(svc, members.get_member(svc, app.name, live=False))
    lines = [
        f"Hello {app.name},",
        "",
        "your application was approved and your container is ready.",
        "",
        f"Log in to the portal with your name ({app.name}) and the password you chose:",
        f"  {_portal(svc, '/login')}",
        "",
    ]
    if sheet is not None:
        lines += [
            "Connect with SSH:",
            f"  {sheet.ssh_command()}",
            "",
            "or add this to ~/.ssh/config:",
            "",
            *("  " + line for line in sheet.ssh_config().splitlines()),
            "",
            "Your container has no password you know yet: on the portal's 'My container' page, add your",
            "SSH public key, or set a first-login password (you change it when you first log in).",
            "",
            f"Your home folder {sheet.container_home} is kept when the container is rebuilt.",
        ]
    return _send(svc, to=[app.email], subject="[labgpu] your container is ready", body="\n".join(lines))


# The background worker ----------------------------------------------------------------------------


class ProvisionWorker:
    """Provisions approved applications in daemon threads, up to ``settings.provision_workers`` at once
    (threads started on first use).

    The portal makes one, queues every unfinished application at start-up (:meth:`resume`) and each
    approval or retry as it comes (:meth:`enqueue`). The store is the queue's truth: a portal killed
    mid-way finds the application still ``approved`` when it starts again. An application is worked on
    by one thread at a time; members made at the same time get distinct uids and ports (the store's
    constraints, retried). Two portal processes on one store may both work on an application; every
    step is safe to repeat and the store's constraints catch a clash."""

    def __init__(self, svc: Services, *, enabled: bool = True, workers: int | None = None) -> None:
        self._svc = svc
        self.enabled = enabled
        self.workers = max(1, workers if workers is not None else svc.settings.provision_workers)
        self._queue: queue.Queue[int] = queue.Queue()
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def enqueue(self, application_id: int) -> None:
        with self._lock:
            if not self.enabled or application_id in self._pending or self._stopping.is_set():
                return
            self._pending.add(application_id)
            self._queue.put(application_id)
            self._threads = [t for t in self._threads if t.is_alive()]
            if len(self._threads) < min(self.workers, len(self._pending)):
                thread = threading.Thread(
                    target=self._run, name=f"labgpu-applications-{len(self._threads) + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def resume(self) -> int:
        """Queue every approved application that has not finished. Returns how many. Never raises."""
        try:
            ids = unfinished(self._svc)
        except Exception:
            log.exception("cannot read unfinished applications")
            return 0
        for application_id in ids:
            self.enqueue(application_id)
        return len(ids)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                application_id = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                provision_application(self._svc, application_id)
            except Exception:  # the store unreachable, say: the application stays approved for later
                log.exception("provisioning application %s failed", application_id)
            finally:
                with self._lock:
                    self._pending.discard(application_id)
                    self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or in progress (tests). Returns False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: not self._pending, timeout=timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking work; wait up to ``timeout`` for the current step (it is resumed at the next start)."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))
