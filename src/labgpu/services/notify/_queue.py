"""The delivery queue: :func:`send` writes one row per channel and returns at once; the portal delivers
them in a background thread right away, and the job runner's ``notify`` job retries what failed with a
doubling wait (:func:`deliver_due`). A runner takes a delivery's lease in one conditional UPDATE before
sending it, so the thread, the job and a second portal on the same store never send it twice; a
failing channel only ever marks its own row.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update

from labgpu.errors import LabgpuError
from labgpu.services.context import Services
from labgpu.services.notify._channels import lab_channels
from labgpu.services.notify._kinds import check_kinds
from labgpu.services.notify._transport import send_apprise, send_mail
from labgpu.settings import Settings
from labgpu.store.models import Member, Role, utcnow
from labgpu.store.models_notify import NotifyChannel, NotifyDelivery

log = logging.getLogger(__name__)

ADMINS = ":admins"  # a recipient: the lab's channels (notify_urls) and every admin's own
PENDING, SENT, FAILED = "pending", "sent", "failed"
LEASE = timedelta(minutes=5)  # longer than any one send can take (Apprise and SMTP time out first)
FIRST_RETRY = timedelta(minutes=1)
LONGEST_WAIT = timedelta(hours=1)

_threads: set[threading.Thread] = set()
_threads_lock = threading.Lock()


def retry_wait(attempts: int) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: 1, 2, 4, ... minutes, at most 1 hour."""
    wait: timedelta = FIRST_RETRY * 2 ** max(attempts - 1, 0)
    return min(wait, LONGEST_WAIT)


def _owner() -> str:
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# Queueing -----------------------------------------------------------------------------------------


def _member_targets(
    svc: Services, member: Member, kind: str, channels: Iterable[NotifyChannel]
) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    if member.email and svc.settings.smtp_host and kind in svc.settings.notify_mail_kinds:
        out.append((f"mail:{member.email}", None))
    out += [(f"channel:{c.id}", c.id) for c in channels if kind in c.kinds]
    return out


def _targets(svc: Services, kind: str, recipients: Sequence[str]) -> list[tuple[str, str, int | None]]:
    """(recipient, target, channel id) for every channel the recipients get ``kind`` on, each once."""
    out: dict[str, tuple[str, str, int | None]] = {}
    with svc.session() as session:
        for recipient in recipients:
            if recipient == ADMINS:
                for lab in lab_channels(svc.settings):
                    if lab.wants(kind):
                        out.setdefault(f"lab:{lab.key}", ("admins", f"lab:{lab.key}", None))
                members = list(session.scalars(select(Member).where(Member.role == Role.ADMIN)))
            elif "@" in recipient:  # an applicant: no account yet, their address only
                if svc.settings.smtp_host and kind in svc.settings.notify_mail_kinds:
                    out.setdefault(f"mail:{recipient}", (recipient, f"mail:{recipient}", None))
                continue
            else:
                members = list(session.scalars(select(Member).where(Member.name == recipient)))
                if not members:
                    log.warning("notification %s for unknown member %r dropped", kind, recipient)
            for member in members:
                channels = session.scalars(select(NotifyChannel).where(NotifyChannel.member_id == member.id))
                for target, channel_id in _member_targets(svc, member, kind, channels):
                    out.setdefault(target, (member.name, target, channel_id))
    return list(out.values())


def send(
    svc: Services,
    kind: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    *,
    key: str | None = None,
) -> int:
    """Notify ``recipients`` (member names, e-mail addresses of people without an account, or
    :data:`ADMINS`) of an event of ``kind`` on every channel they get it on: their account's address
    by mail (when smtp_host is set and the kind is in notify_mail_kinds), their own channels that
    chose the kind, and for ADMINS the lab's notify_urls. Returns how many deliveries were queued.

    Does not wait: the messages are queued in the store and sent by a background thread at once,
    then retried by the job runner. A dead channel never delays or fails the caller; nor does the
    store being down (logged, 0). With ``key``, a second send with the same key is dropped (a job
    that runs again does not notify again). Raises BadInput for an unknown kind (a programming error)."""
    check_kinds([kind])
    try:
        with svc.session() as session:
            if (
                key is not None
                and session.scalars(select(NotifyDelivery.id).where(NotifyDelivery.key == key)).first()
            ):
                return 0
        targets = _targets(svc, kind, recipients)
        if not targets:
            log.info("notification %s %r: no channel to send it on", kind, subject)
            return 0
        now = utcnow()
        with svc.session() as session:
            rows = [
                NotifyDelivery(
                    kind=kind,
                    recipient=recipient[:254],
                    target=target[:320],
                    channel_id=channel_id,
                    key=key,
                    subject=subject,
                    body=body,
                    status=PENDING,
                    next_attempt_at=now,
                )
                for recipient, target, channel_id in targets
            ]
            session.add_all(rows)
            session.flush()
            ids = [r.id for r in rows]
    except LabgpuError as exc:
        log.warning("notification %s %r not queued: %s", kind, subject, exc.message)
        return 0
    _deliver_in_background(svc, ids)
    return len(ids)


def _deliver_in_background(svc: Services, ids: list[int]) -> None:
    def run() -> None:
        try:
            owner = _owner()
            for delivery_id in ids:
                deliver_one(svc, delivery_id, owner=owner, now=utcnow())
        except Exception:  # the job runner retries; a thread's failure is only logged
            log.exception("delivering notifications %s failed; the job runner retries them", ids)
        finally:
            with _threads_lock:
                _threads.discard(threading.current_thread())

    # Not a daemon: a CLI command that notified waits for its messages before it exits.
    thread = threading.Thread(target=run, name="labgpu-notify", daemon=False)
    with _threads_lock:
        _threads.add(thread)
    thread.start()


def wait_for_deliveries(timeout: float = 30.0) -> bool:
    """Wait for this process's background deliveries to finish (tests, and commands before they report).
    True when none is left running."""
    deadline = utcnow() + timedelta(seconds=timeout)
    while True:
        with _threads_lock:
            running = list(_threads)
        if not running:
            return True
        left = (deadline - utcnow()).total_seconds()
        if left <= 0:
            return False
        running[0].join(timeout=left)


# Delivering ---------------------------------------------------------------------------------------


def _claim(svc: Services, delivery_id: int, *, owner: str, now: datetime) -> bool:
    with svc.session() as session:
        result = session.execute(
            update(NotifyDelivery)
            .where(
                NotifyDelivery.id == delivery_id,
                NotifyDelivery.status == PENDING,
                NotifyDelivery.next_attempt_at <= now,
                or_(NotifyDelivery.lease_until.is_(None), NotifyDelivery.lease_until <= now),
            )
            .values(lease_owner=owner, lease_until=now + LEASE)
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0) == 1


def _send_to(svc: Services, row: NotifyDelivery) -> str | None:
    kind, _, rest = row.target.partition(":")
    if kind == "mail":
        return send_mail(svc.settings, rest, row.subject, row.body)
    if kind == "lab":
        for lab in lab_channels(svc.settings):
            if lab.key == rest:
                return send_apprise(lab.url, row.subject, row.body)
        return "this channel is no longer in notify_urls"
    if kind == "channel" and row.channel_id is not None:
        with svc.session() as session:
            channel = session.get(NotifyChannel, row.channel_id)
            url = channel.url if channel is not None else None
        return send_apprise(url, row.subject, row.body) if url else "the channel was removed"
    return f"unknown target {row.target!r}"


@dataclass(frozen=True)
class Attempt:
    id: int
    target: str
    status: str  # sent, pending (to be retried), failed (given up)
    error: str | None


def deliver_one(svc: Services, delivery_id: int, *, owner: str, now: datetime) -> Attempt | None:
    """Send one queued delivery if it is due and nobody else holds it; record the outcome (sent, or the
    next attempt after a doubling wait, or given up after notify_max_attempts). None: not taken."""
    if not _claim(svc, delivery_id, owner=owner, now=now):
        return None
    with svc.session() as session:
        row = session.get(NotifyDelivery, delivery_id)
        assert row is not None
        session.expunge(row)
    try:
        error = _send_to(svc, row)
    except Exception as exc:  # a bug in one channel must not stop the others
        log.exception("notification %s to %s failed", row.id, row.target)
        error = f"{type(exc).__name__}"
    attempts = row.attempts + 1
    values: dict[str, Any]
    if error is None:
        status, values = SENT, {"sent_at": utcnow(), "last_error": None}
    elif attempts >= svc.settings.notify_max_attempts:
        status, values = FAILED, {"last_error": error[:2000]}
    else:
        status, values = PENDING, {"last_error": error[:2000], "next_attempt_at": now + retry_wait(attempts)}
    with svc.session() as session:
        session.execute(
            update(NotifyDelivery)
            .where(NotifyDelivery.id == delivery_id, NotifyDelivery.lease_owner == owner)
            .values(status=status, attempts=attempts, lease_owner=None, lease_until=None, **values)
            .execution_options(synchronize_session=False)
        )
    if error is not None:
        log.warning(
            "notification %s (%s) to %s not sent: %s",
            row.id,
            row.kind,
            _shown_target(svc.settings, row.target),
            error,
        )
    return Attempt(delivery_id, _shown_target(svc.settings, row.target), status, error)


def _shown_target(settings: Settings, target: str) -> str:
    """A target as people see it: a lab channel's URL masked (the queue holds only its hash)."""
    if not target.startswith("lab:"):
        return target
    shown = [lab.shown for lab in lab_channels(settings) if f"lab:{lab.key}" == target]
    return shown[0] if shown else "a channel no longer in notify_urls"


@dataclass
class DeliveryReport:
    attempts: list[Attempt] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        for a in self.attempts:
            if a.status == SENT:
                out.append(f"notification {a.id} to {a.target}: sent")
            else:
                verdict = "given up" if a.status == FAILED else "retried later"
                out.append(f"notification {a.id} to {a.target}: {a.error} ({verdict})")
        return out


def deliver_due(svc: Services, *, now: datetime, limit: int = 200) -> DeliveryReport:
    """Send every queued delivery that is due (the ``notify`` job), oldest first, at most ``limit``."""
    with svc.session() as session:
        ids = list(
            session.scalars(
                select(NotifyDelivery.id)
                .where(NotifyDelivery.status == PENDING, NotifyDelivery.next_attempt_at <= now)
                .order_by(NotifyDelivery.id)
                .limit(limit)
            )
        )
    owner = _owner()
    report = DeliveryReport()
    for delivery_id in ids:
        attempt = deliver_one(svc, delivery_id, owner=owner, now=now)
        if attempt is not None:
            report.attempts.append(attempt)
    return report


@dataclass(frozen=True)
class DeliveryInfo:
    id: int
    created_at: datetime
    kind: str
    recipient: str
    target: str
    subject: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    sent_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in self.__dict__.items()}


def list_deliveries(svc: Services, *, status: str | None = None, limit: int = 50) -> list[DeliveryInfo]:
    """The newest deliveries (or those with ``status``), newest first; lab channels shown without URL."""
    query = select(NotifyDelivery).order_by(NotifyDelivery.id.desc()).limit(limit)
    if status is not None:
        query = query.where(NotifyDelivery.status == status)
    with svc.session() as session:
        return [
            DeliveryInfo(
                id=r.id,
                created_at=r.created_at,
                kind=r.kind,
                recipient=r.recipient,
                target=_shown_target(svc.settings, r.target),
                subject=r.subject,
                status=r.status,
                attempts=r.attempts,
                next_attempt_at=r.next_attempt_at,
                last_error=r.last_error,
                sent_at=r.sent_at,
            )
            for r in session.scalars(query)
        ]


def prune_deliveries(svc: Services, *, before: datetime) -> int:
    """Delete deliveries sent or given up before ``before``; pending ones stay."""
    with svc.session() as session:
        result = session.execute(
            delete(NotifyDelivery).where(NotifyDelivery.status != PENDING, NotifyDelivery.created_at < before)
        )
        return int(getattr(result, "rowcount", 0) or 0)
