"""The one door through which the GPU usage code tells people something: :func:`send_notice`.

The agreed interface with the notification service (Apprise channels, a delivery queue in the store) is
the plain call ``notify.send(svc, kind, recipients, subject, body)``: ``kind`` names the event (its
kinds here: ``limit-reached``, ``weekly-report``), ``recipients`` are member names, the word ``admins``
standing for every admin account, and the service looks up each one's channels, queues the notice and
retries it. When that service is merged, :func:`send_notice` hands its arguments on unchanged. Until
then it mails each recipient's address through :mod:`labgpu.services.mail`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select

from labgpu.errors import Unavailable
from labgpu.services.context import Services
from labgpu.services.mail import send_mail
from labgpu.store.models import Member, Role

log = logging.getLogger(__name__)

LIMIT_REACHED = "limit-reached"
WEEKLY_REPORT = "weekly-report"
ADMINS = "admins"


def send_notice(svc: Services, kind: str, recipients: Sequence[str], subject: str, body: str) -> bool:
    """Send one notice of ``kind`` to ``recipients`` (member names; ``admins``: every admin account).

    Returns True when it went to at least one recipient, False when there was nobody to send it to
    (no address, mail not configured) or the channel failed. Never raises and never waits longer than
    one delivery attempt: a failing channel must not fail or hold up the job that caused it (it is
    logged)."""
    names = [r for r in recipients if r != ADMINS]
    with svc.session() as session:
        query = select(Member.email).where(Member.name.in_(names))
        if ADMINS in recipients:
            query = select(Member.email).where((Member.name.in_(names)) | (Member.role == Role.ADMIN))
        addresses = sorted({a for a in session.scalars(query) if a})
    if not addresses:
        log.info("%s notice %r: nobody to send it to", kind, subject)
        return False
    try:
        return send_mail(svc.settings, to=addresses, subject=subject, body=body)
    except Unavailable as exc:
        log.warning("%s notice %r not sent: %s", kind, subject, exc.message)
        return False
