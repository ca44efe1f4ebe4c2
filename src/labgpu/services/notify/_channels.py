"""Channels: the lab's (the ``notify_urls`` setting, for the admins) and each member's own (an Apprise URL
and the kinds of event it gets, kept in the store, shown back masked only)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from labgpu.errors import N_, BadInput, Conflict, NotFound
from labgpu.services.context import Services
from labgpu.services.notify._kinds import KINDS, check_kinds
from labgpu.services.notify._transport import mask_url, parse, scheme_of
from labgpu.settings import Settings
from labgpu.store.models import Member
from labgpu.store.models_notify import NotifyChannel

MAX_CHANNELS_PER_MEMBER = 10
MAX_URL_LENGTH = 2000


@dataclass(frozen=True)
class LabChannel:
    """One of ``notify_urls``: its URL (secret), the kinds it gets (None: all) and how it is shown."""

    key: str  # names it in the queue without its secret
    url: str
    kinds: tuple[str, ...] | None

    @property
    def shown(self) -> str:
        return mask_url(self.url)

    def wants(self, kind: str) -> bool:
        return self.kinds is None or kind in self.kinds


def _key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def lab_channels(settings: Settings) -> list[LabChannel]:
    """The ``notify_urls``, each optionally prefixed with kinds (``kind,kind=URL``, Apprise's own text
    form for tags). An unknown kind in a prefix is ignored rather than losing the channel."""
    out = []
    for secret in settings.notify_urls:
        # A SecretStr from the settings file or environment; a str when a copy was updated in code.
        entry = (secret if isinstance(secret, str) else secret.get_secret_value()).strip()
        if not entry:
            continue
        kinds: tuple[str, ...] | None = None
        head, sep, rest = entry.partition("=")
        if sep and "://" not in head:
            kinds = tuple(k.strip() for k in head.replace(" ", ",").split(",") if k.strip() in KINDS)
            entry = rest.strip()
        out.append(LabChannel(key=_key(entry), url=entry, kinds=kinds))
    return out


@dataclass(frozen=True)
class ChannelInfo:
    """A member's channel as pages and the CLI show it: never the URL itself."""

    id: int
    member: str
    label: str
    shown: str
    kinds: tuple[str, ...]
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "kinds": list(self.kinds), "created_at": self.created_at.isoformat()}


def _info(row: NotifyChannel, member: str) -> ChannelInfo:
    return ChannelInfo(
        id=row.id,
        member=member,
        label=row.label,
        shown=mask_url(row.url),
        kinds=tuple(row.kinds),
        created_at=row.created_at,
    )


def _member_id(svc: Services, name: str) -> int:
    with svc.session() as session:
        member_id = session.scalars(select(Member.id).where(Member.name == name)).first()
    if member_id is None:
        raise NotFound(N_("no member named %(name)s"), values={"name": name})
    return int(member_id)


def list_channels(svc: Services, member: str) -> list[ChannelInfo]:
    """The member's own channels, oldest first. Raises NotFound for an unknown member."""
    member_id = _member_id(svc, member)
    with svc.session() as session:
        rows = session.scalars(
            select(NotifyChannel).where(NotifyChannel.member_id == member_id).order_by(NotifyChannel.id)
        )
        return [_info(r, member) for r in rows]


def check_member_url(settings: Settings, url: str) -> str:
    """A member's channel URL, checked: one line, a scheme the lab allows (``notify_member_schemes``)
    and one Apprise understands. Raises BadInput saying what is wrong, never echoing the URL."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH or not url.isprintable() or any(c.isspace() for c in url):
        raise BadInput(
            N_("a channel is one Apprise URL of at most %(n)s characters"), values={"n": MAX_URL_LENGTH}
        )
    scheme = scheme_of(url)
    allowed = [s.lower() for s in settings.notify_member_schemes]
    if scheme not in allowed:
        raise BadInput(
            N_("channels starting %(scheme)s:// are not allowed here; allowed: %(allowed)s"),
            values={"scheme": scheme or "?", "allowed": ", ".join(f"{s}://" for s in allowed) or "-"},
        )
    if parse(url) is None:
        raise BadInput(
            N_("this %(scheme)s:// URL is not complete or not valid: see the Apprise documentation"),
            values={"scheme": scheme},
        )
    return url


def add_channel(
    svc: Services, member: str, *, url: str, label: str = "", kinds: list[str] | tuple[str, ...]
) -> ChannelInfo:
    """Add a channel of the member's own. Raises BadInput (URL, label, kinds), NotFound (member),
    Conflict past MAX_CHANNELS_PER_MEMBER. Audited as ``notify.channel.add`` (the masked URL only)."""
    url = check_member_url(svc.settings, url)
    label = " ".join(label.split()) or scheme_of(url)
    if len(label) > 64 or not label.isprintable():
        raise BadInput(N_("a channel's name is 1 to 64 printable characters"))
    chosen = check_kinds(list(kinds))
    if not chosen:
        raise BadInput(N_("choose at least one kind of event for the channel"))
    member_id = _member_id(svc, member)
    with svc.session() as session:
        count = session.scalar(
            select(func.count()).select_from(NotifyChannel).where(NotifyChannel.member_id == member_id)
        )
        if (count or 0) >= MAX_CHANNELS_PER_MEMBER:
            raise Conflict(
                N_("at most %(n)s channels per member: remove one first"),
                values={"n": MAX_CHANNELS_PER_MEMBER},
            )
        row = NotifyChannel(member_id=member_id, label=label, url=url, kinds=chosen)
        session.add(row)
        session.flush()
        info = _info(row, member)
        svc.audit(session, "notify.channel.add", member, channel=info.id, url=info.shown, kinds=chosen)
        return info


def channel_url(svc: Services, member: str, channel_id: int) -> tuple[ChannelInfo, str]:
    """The member's channel and its URL (to send to). Raises NotFound when the member has no such
    channel: another member's channel is exactly as missing as one that does not exist."""
    member_id = _member_id(svc, member)
    with svc.session() as session:
        row = session.get(NotifyChannel, channel_id)
        if row is None or row.member_id != member_id:
            raise NotFound(N_("no channel %(id)s"), values={"id": channel_id})
        return _info(row, member), row.url


def remove_channel(svc: Services, member: str, channel_id: int) -> ChannelInfo:
    """Remove a channel of the member's (its queued messages go with it). Raises NotFound. Audited as
    ``notify.channel.remove``."""
    info, _ = channel_url(svc, member, channel_id)
    with svc.session() as session:
        row = session.get(NotifyChannel, channel_id)
        if row is not None:
            session.delete(row)
        svc.audit(session, "notify.channel.remove", member, channel=channel_id, url=info.shown)
    return info
