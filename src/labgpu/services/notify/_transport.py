"""Sending one message to one channel, now: mail through labgpu's own SMTP settings (the default
channel), everything else through Apprise. Secrets in a channel's URL (a bot key, a password) never
reach a log line, an error or a page: :func:`mask_url` shows a URL, :func:`redact` cleans a message.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import apprise

from labgpu.errors import LabgpuError
from labgpu.services import mail
from labgpu.settings import Settings

log = logging.getLogger(__name__)

# Apprise reports why a send failed only through its logger: one send at a time reads it.
_LOCK = threading.RLock()
_APPRISE_LOGGER = "apprise"  # apprise.logger.LOGGER_NAME
_SEPARATORS = re.compile(r"[/:@?&=#,+;]+")
# Query parameters Apprise adds to every URL it shows; they say nothing to a person.
_NOISE = re.compile(r"[?&](overflow|retry|wait|optional|format|cto|rto|verify|method|emojis|store|tz)=[^&]*")


def parse(url: str) -> apprise.Apprise | None:
    """The URL loaded into an Apprise object, or None when Apprise does not understand it."""
    obj = apprise.Apprise()
    with _LOCK, _quiet():
        return obj if obj.add(url) and len(obj) == 1 else None


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower() if "://" in url else ""


def mask_url(url: str) -> str:
    """The URL as people may see it: Apprise's privacy form (keys shortened, passwords starred),
    without its noise. Never the secret itself; ``scheme://****`` for a URL Apprise cannot read."""
    obj = parse(url)
    if obj is None:
        return f"{scheme_of(url) or '?'}://****"
    shown = str(obj[0].url(privacy=True))  # type: ignore[no-untyped-call]
    base, _, query = shown.partition("?")
    rest = _NOISE.sub("", "?" + query).lstrip("?&")
    return base + ("?" + rest if rest else "")


def secret_parts(url: str) -> set[str]:
    """The pieces of ``url`` that its masked form does not show: what must never be printed."""
    shown = set(_SEPARATORS.split(mask_url(url)))
    return {p for p in _SEPARATORS.split(url) if len(p) >= 4 and p not in shown} - {scheme_of(url)}


def redact(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "****")
    return text


class _Capture(logging.Handler):
    """Collects what Apprise warns about during one send, with the URL's secrets taken out (the same
    filter cleans every Apprise record that reaches labgpu's own logs, DEBUG included)."""

    def __init__(self, secrets: set[str]) -> None:
        super().__init__(logging.DEBUG)
        self.secrets = secrets
        self.lines: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = ()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            self.lines.append(record.getMessage())


@contextmanager
def _capture(secrets: set[str]) -> Iterator[_Capture]:
    logger = logging.getLogger(_APPRISE_LOGGER)
    capture = _Capture(secrets)
    logger.addFilter(capture.filter)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.removeFilter(capture.filter)


@contextmanager
def _quiet() -> Iterator[None]:
    # Parsing a URL logs it in full at DEBUG: nothing of that may leave.
    logger = logging.getLogger(_APPRISE_LOGGER)
    drop = logging.Filter("nothing passes this filter")
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def send_apprise(url: str, subject: str, body: str) -> str | None:
    """Send through Apprise, waiting for it (Apprise's own timeouts: seconds). None: sent; otherwise
    why not, without the URL's secrets."""
    secrets = secret_parts(url)
    obj = parse(url)
    if obj is None:
        return f"not a channel URL labgpu can use ({mask_url(url)})"
    with _LOCK, _capture(secrets | {url}) as capture:
        try:
            ok = obj.notify(title=subject, body=body, body_format=apprise.NotifyFormat.TEXT)
        except Exception as exc:  # a plugin's bug must not lose the queue; the reason is kept
            return redact(f"{type(exc).__name__}: {exc}", secrets)
    if ok:
        return None
    return "; ".join(dict.fromkeys(capture.lines)) or "the channel refused the message"


def send_mail(settings: Settings, address: str, subject: str, body: str) -> str | None:
    """Send by mail through the smtp_* settings. None: sent; otherwise why not."""
    if not settings.smtp_host:
        return "mail is not configured (smtp_host is empty)"
    try:
        mail.send_mail(settings, to=[address], subject=subject, body=body)
    except LabgpuError as exc:
        return exc.message
    return None
