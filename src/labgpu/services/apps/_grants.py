"""Who may use an app on the apps origin: one-time tickets, app cookies and rate limits.

The portal's login cookie never reaches an app. Opening an app on the portal (a POST with its CSRF token, by
the member or an admin) gives a ticket: signed, valid for a minute, usable once. The apps origin trades it for
an app cookie scoped to that one app's path (``/m/MEMBER/APP/``), signed and bound to the portal login it came
from: when that login ends (log out, time-out, account disabled) the app cookie is worth nothing at the next
request. Both are HMACs with the portal's secret key under their own purpose, so one cannot pass for the other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

from labgpu.errors import LabgpuError

TICKET_SECONDS = 60


class RateLimited(LabgpuError):
    """More requests than a limit allows within a minute."""

    status = 429
    reason = "rate-limited"


@dataclass(frozen=True)
class Grant:
    """Account ``account`` (an admin or not) may use ``member``'s ``app`` while login ``session_id`` lasts."""

    account: str
    is_admin: bool
    session_id: str
    member: str
    app: str
    expires: int

    def allows(self, member: str, app: str) -> bool:
        return self.member == member and self.app == app and self.expires > time.time()


def _sign(secret: str, purpose: str, payload: bytes) -> str:
    return hmac.new(secret.encode(), purpose.encode() + b"\0" + payload, hashlib.sha256).hexdigest()


def _encode(secret: str, purpose: str, grant: Grant) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(asdict(grant), separators=(",", ":")).encode())
    return payload.decode().rstrip("=") + "." + _sign(secret, purpose, payload.rstrip(b"="))


def _decode(secret: str, purpose: str, value: str) -> Grant | None:
    if not value or len(value) > 2048 or value.count(".") != 1:
        return None
    payload, signature = value.split(".")
    expected = _sign(secret, purpose, payload.encode())
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        grant = Grant(**data)
    except (ValueError, TypeError):
        return None
    return grant if grant.expires > time.time() else None


class Tickets:
    """Issues and redeems one-time tickets (the redeemed ones are remembered until they expire)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self, *, account: str, is_admin: bool, session_id: str, member: str, app: str) -> str:
        grant = Grant(account, is_admin, session_id, member, app, int(time.time()) + TICKET_SECONDS)
        return _encode(self._secret, "app-ticket", grant)

    def redeem(self, ticket: str) -> Grant | None:
        """The ticket's grant, or None when it is forged, expired or was used before."""
        grant = _decode(self._secret, "app-ticket", ticket)
        if grant is None:
            return None
        now = time.time()
        with self._lock:
            for key, expires in list(self._used.items()):
                if expires <= now:
                    del self._used[key]
            if ticket in self._used:
                return None
            self._used[ticket] = grant.expires
        return grant

    def cookie(self, grant: Grant, *, seconds: int) -> str:
        """The app cookie's value for ``grant`` (it expires with the login's absolute timeout at the latest)."""
        lasting = Grant(**{**asdict(grant), "expires": int(time.time()) + seconds})
        return _encode(self._secret, "app-cookie", lasting)

    def read_cookie(self, value: str) -> Grant | None:
        return _decode(self._secret, "app-cookie", value)


class RateLimiter:
    """At most ``per_minute`` hits per key in any 60 seconds (in memory: one portal process)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return False
            hits.append(now)
            if len(self._hits) > 10000:  # forget idle keys
                for k in [k for k, v in self._hits.items() if not v]:
                    del self._hits[k]
            return True
