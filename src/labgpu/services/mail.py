"""Mail to members and admins over SMTP (smtplib), plain text, never blocking a request for long.

When no ``smtp_host`` is set, nothing is sent and the message is logged at INFO with its subject and
recipient only (never the body, which may hold a link or a name).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from labgpu.errors import Unavailable
from labgpu.settings import Settings

log = logging.getLogger(__name__)
SMTP_TIMEOUT = 15.0


@dataclass(frozen=True)
class Mail:
    to: tuple[str, ...]
    subject: str
    body: str


def build_message(settings: Settings, mail: Mail) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = ", ".join(mail.to)
    msg["Subject"] = mail.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=settings.mail_from.rpartition("@")[2] or "localhost")
    msg.set_content(mail.body)
    return msg


def send_mail(settings: Settings, *, to: Sequence[str], subject: str, body: str) -> bool:
    """Send one plain-text mail. Returns False when mail is not configured (nothing sent).

    Raises Unavailable when the SMTP server cannot be reached or refuses the mail; callers that must
    not fail because of mail (approving an application) catch it and record it."""
    recipients = tuple(addr for addr in to if addr)
    if not recipients:
        return False
    if not settings.smtp_host:
        log.info("mail not configured: not sending %r to %s", subject, ", ".join(recipients))
        return False
    message = build_message(settings, Mail(recipients, subject, body))
    try:
        if settings.smtp_security == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.smtp_host,
                settings.smtp_port,
                timeout=SMTP_TIMEOUT,
                context=ssl.create_default_context(),
            )
        else:
            client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=SMTP_TIMEOUT)
        with client:
            if settings.smtp_security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                client.login(settings.smtp_user, password)
            client.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise Unavailable(
            f"cannot send mail through {settings.smtp_host}:{settings.smtp_port}: {exc}",
            hint="check the smtp_* settings",
        ) from exc
    return True
