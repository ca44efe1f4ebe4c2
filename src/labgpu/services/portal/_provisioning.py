"""Provisioning approved applications: each step recorded in ``Application.progress`` before the next, so
that running :func:`provision_application` again finishes one that a crash cut short; passing failures
are retried, and :class:`ProvisionWorker` does it in the background for the portal.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time

from sqlalchemy import select

from labgpu.errors import Conflict, LabgpuError, Unavailable
from labgpu.runtime.errors import RuntimeError_
from labgpu.services import members
from labgpu.services.context import Actor, Services
from labgpu.services.portal._application_mail import notify_applicant
from labgpu.services.portal._applications import (
    ACCOUNT,
    CREATING,
    DONE,
    WAITING_SSH,
    ApplicationInfo,
    _info,
    _load,
    get_application,
    unfinished,
)
from labgpu.store.models import Account, ApplicationStatus, Member, MemberState, Role, utcnow

log = logging.getLogger(__name__)


# A daemon's error (it failed an operation, or did not answer) or a container whose sshd did not come up may
# pass: a busy daemon has been seen failing 2 of 50 parallel creates with "readdirent ...: bad file
# descriptor". Such an application is tried again after these pauses before it is marked failed. Wrong
# input (a template that does not exist, a name taken meanwhile) fails at once.
RETRY_DELAYS_S = (5.0, 20.0)
TRANSIENT: tuple[type[LabgpuError], ...] = (RuntimeError_, Unavailable, members.ProvisionError)


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
