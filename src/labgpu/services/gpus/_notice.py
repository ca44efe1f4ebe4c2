"""The one door through which the GPU usage code tells people something: :func:`send_notice`, a thin
wrapper over ``notify.send`` (Apprise channels and mail, queued in the store and retried)."""

from __future__ import annotations

from collections.abc import Sequence

from labgpu.services import notify as notifications
from labgpu.services.context import Services

LIMIT_REACHED = notifications.LIMIT_REACHED
WEEKLY_REPORT = notifications.WEEKLY_REPORT
ADMINS = notifications.ADMINS


def send_notice(
    svc: Services, kind: str, recipients: Sequence[str], subject: str, body: str, *, key: str | None = None
) -> bool:
    """Queue one notice of ``kind`` to ``recipients`` (member names; :data:`ADMINS`: the lab's channels and
    every admin). Returns True when at least one delivery was queued. Never raises on a failing channel and
    never waits for one: delivery happens in the background, retried with backoff."""
    return notifications.send(svc, kind, list(recipients), subject, body, key=key) > 0
