"""Test messages, sent at once (not queued) so that the caller learns which channel failed and why:
``labgpu notify test`` for the lab's channels, the portal's "send a test" for a member's own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from labgpu.services.context import Services
from labgpu.services.notify._channels import channel_url, lab_channels, list_channels
from labgpu.services.notify._transport import send_apprise, send_mail
from labgpu.store.models import Member, Role

SENT, FAILED, SKIPPED = "sent", "failed", "skipped"
TEST_SUBJECT = "[labgpu] test notification"
TEST_BODY = "This is a test from labgpu: this channel works.\n\nSent by {who}."


@dataclass(frozen=True)
class ChannelCheck:
    """One channel's answer to a test message."""

    channel: str  # as shown: masked URL, or "mail to ADDRESS"
    status: str  # sent, failed, skipped (not configured)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != FAILED

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "status": self.status, "error": self.error}


def _mail(svc: Services, address: str, body: str) -> ChannelCheck:
    error = send_mail(svc.settings, address, TEST_SUBJECT, body)
    return ChannelCheck(f"mail to {address}", FAILED if error else SENT, error)


def check_lab_channels(svc: Services, *, to: list[str] | None = None) -> list[ChannelCheck]:
    """Send a test to every lab channel: each of notify_urls, and mail to every admin's address (or to
    ``to``) when smtp_host is set. Waits for each (seconds per channel). Never raises for a channel."""
    body = TEST_BODY.format(who=svc.actor.name)
    out = []
    for lab in lab_channels(svc.settings):
        error = send_apprise(lab.url, TEST_SUBJECT, body)
        out.append(ChannelCheck(lab.shown, FAILED if error else SENT, error))
    if not svc.settings.smtp_host:
        out.append(ChannelCheck("mail", SKIPPED, "not configured: smtp_host is empty"))
        return out
    if to is None:
        with svc.session() as session:
            to = [
                e
                for e in session.scalars(
                    select(Member.email).where(Member.role == Role.ADMIN).order_by(Member.name)
                )
                if e
            ]
    if not to:
        out.append(ChannelCheck("mail", SKIPPED, "no admin has an e-mail address (give one with --to)"))
    out += [_mail(svc, address, body) for address in to]
    return out


def check_member_channels(svc: Services, member: str) -> list[ChannelCheck]:
    """Send a test to the member's account address (when mail is configured) and each of their own
    channels. Raises NotFound for an unknown member."""
    body = TEST_BODY.format(who=svc.actor.name)
    out = []
    with svc.session() as session:
        email = session.scalars(select(Member.email).where(Member.name == member)).first()
    if email and svc.settings.smtp_host:
        out.append(_mail(svc, email, body))
    for info in list_channels(svc, member):
        out.append(check_channel(svc, member, info.id))
    return out


def check_channel(svc: Services, member: str, channel_id: int) -> ChannelCheck:
    """Send a test to one of the member's channels. Raises NotFound when it is not theirs."""
    info, url = channel_url(svc, member, channel_id)
    error = send_apprise(url, TEST_SUBJECT, TEST_BODY.format(who=svc.actor.name))
    return ChannelCheck(f"{info.label}: {info.shown}", FAILED if error else SENT, error)
