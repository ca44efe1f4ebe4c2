"""The open terminals of one portal process, and the pump between a browser and a container's shell.

:class:`Terminals` counts and limits the terminals (per account: how many at once, how many opened a
minute), and closes them from any thread: the account's login session ended (log out), every session of
the account ended (log out everywhere, disabled), the portal stops. :func:`run_terminal` moves bytes both
ways between the browser's WebSocket and the daemon's exec WebSockets, resizes the pty, closes an idle
terminal, and asks the caller every ``recheck_seconds`` whether the login is still good (so that a session
ended elsewhere, by another process such as the CLI, closes it too).

The browser side is a small protocol (:class:`BrowserSocket`) so that the web layer's WebSocket, or a test's,
plugs in. Messages from the browser: binary frames are keystrokes (UTF-8), text frames are JSON controls
(``{"type": "resize", "cols": C, "rows": R}``). Messages to it: binary frames of terminal output.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from labgpu.errors import N_, LabgpuError
from labgpu.runtime.terminal import ExecStream

log = logging.getLogger(__name__)


class TooManyTerminals(LabgpuError):
    """An account has too many terminals open, or opened too many within a minute."""

    status = 429
    reason = "throttled"


# How a terminal ended, as WebSocket close codes (4000-4999 are the application's own) and reasons.
CLOSE_EXITED = 1000  # the shell ended (exit, logout)
CLOSE_IDLE = 4000
CLOSE_LOGGED_OUT = 4001
CLOSE_SHUTDOWN = 4002
CLOSE_FAILED = 4003
CLOSE_REASONS = {
    CLOSE_EXITED: "exited",
    CLOSE_IDLE: "idle",
    CLOSE_LOGGED_OUT: "logged-out",
    CLOSE_SHUTDOWN: "shutdown",
    CLOSE_FAILED: "failed",
}


class BrowserSocket(Protocol):
    """The browser's end of a terminal."""

    async def receive(self) -> bytes | str | None:
        """The next message (None once the browser has gone)."""

    async def send(self, data: bytes) -> None:
        """Send terminal output."""

    async def close(self, code: int, reason: str) -> None:
        """Close the connection with ``code`` (safe when it is closed already)."""


@dataclass(eq=False)
class LiveTerminal:
    """One open terminal, as the registry knows it."""

    id: int
    member: str  # whose container
    account: str  # who opened it (the member, or an admin)
    session_id: str | None
    opened_at: float
    last_input: float
    loop: asyncio.AbstractEventLoop | None = None
    ended: asyncio.Event | None = None
    close_code: int = CLOSE_EXITED
    ended_early: bool = False  # asked to end before its pump ran (a logout while it was opening)

    def end(self, code: int) -> None:
        """Ask the terminal to close with ``code``; callable from any thread."""
        if self.loop is None or self.ended is None:
            self.close_code, self.ended_early = code, True
            return
        event = self.ended

        def _set() -> None:
            if not event.is_set():
                self.close_code = code
                event.set()

        with contextlib.suppress(RuntimeError):  # the loop is closed: the terminal is gone already
            self.loop.call_soon_threadsafe(_set)


@dataclass
class Terminals:
    """The registry of this process's open terminals (one per portal app)."""

    max_open: int = 10
    opens_per_minute: int = 30
    _live: dict[int, LiveTerminal] = field(default_factory=dict)
    _opens: dict[str, deque[float]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, account: str, member: str, session_id: str | None) -> LiveTerminal:
        """Reserve a terminal for ``account`` (into ``member``'s container), or raise TooManyTerminals.
        Give it back with :meth:`release` whatever happens next."""
        now = time.monotonic()
        with self._lock:
            opens = self._opens.setdefault(account, deque())
            while opens and opens[0] <= now - 60:
                opens.popleft()
            if sum(1 for t in self._live.values() if t.account == account) >= self.max_open:
                raise TooManyTerminals(
                    N_("you have %(count)s terminals open already; close one first"),
                    values={"count": self.max_open},
                )
            if len(opens) >= self.opens_per_minute:
                raise TooManyTerminals(N_("too many terminals opened within a minute; wait a little"))
            opens.append(now)
            live = LiveTerminal(
                id=next(self._ids),
                member=member,
                account=account,
                session_id=session_id,
                opened_at=now,
                last_input=now,
            )
            self._live[live.id] = live
            return live

    def release(self, live: LiveTerminal) -> None:
        with self._lock:
            self._live.pop(live.id, None)

    def open_count(self, account: str | None = None) -> int:
        with self._lock:
            return sum(1 for t in self._live.values() if account is None or t.account == account)

    def _end(self, code: int, match: Callable[[LiveTerminal], bool]) -> int:
        with self._lock:
            chosen = [t for t in self._live.values() if match(t)]
        for live in chosen:
            live.end(code)
        return len(chosen)

    def end_session(self, session_id: str) -> int:
        """Close the terminals opened with login session ``session_id`` (it was logged out)."""
        return self._end(CLOSE_LOGGED_OUT, lambda t: t.session_id == session_id)

    def end_account(self, account: str) -> int:
        """Close every terminal opened by ``account`` (logged out everywhere, or disabled)."""
        return self._end(CLOSE_LOGGED_OUT, lambda t: t.account == account)

    def end_all(self) -> int:
        """Close every terminal (the portal stops)."""
        return self._end(CLOSE_SHUTDOWN, lambda t: True)


def _control(text: str) -> tuple[int, int] | None:
    """A resize request from the browser, or None for anything else (ignored: never an error)."""
    try:
        message = json.loads(text)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "resize":
        return None
    cols, rows = message.get("cols"), message.get("rows")
    if type(cols) is not int or type(rows) is not int or cols < 1 or rows < 1:
        return None
    return cols, rows


async def run_terminal(
    live: LiveTerminal,
    stream: ExecStream,
    browser: BrowserSocket,
    *,
    idle_seconds: float,
    recheck_seconds: float,
    still_allowed: Callable[[bool], Awaitable[bool]],
) -> int:
    """Pump the terminal until the shell ends, the browser goes, it is idle for ``idle_seconds`` (no
    keystroke, paste or resize from the browser), ``still_allowed(active)`` says no (``active``: there was
    input since the last ask), or :class:`Terminals` ends it. Closes both ends; returns the close code."""
    live.loop = asyncio.get_running_loop()
    live.ended = asyncio.Event()
    ended = live.ended
    active = False

    def finish(code: int) -> None:
        if not ended.is_set():
            live.close_code = code
            ended.set()

    async def to_browser() -> None:
        while True:
            data = await stream.recv()
            if data is None:
                finish(CLOSE_EXITED)
                return
            await browser.send(data)

    async def from_browser() -> None:
        nonlocal active
        while True:
            message = await browser.receive()
            if message is None:
                finish(CLOSE_EXITED)
                return
            live.last_input = time.monotonic()
            active = True
            if isinstance(message, bytes):
                await stream.send(message)
            else:
                size = _control(message)
                if size is not None:
                    await stream.resize(*size)

    async def watch() -> None:
        nonlocal active
        tick = max(0.05, min(idle_seconds, recheck_seconds) / 2)
        last_check = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if now - live.last_input >= idle_seconds:
                finish(CLOSE_IDLE)
                return
            if now - last_check >= recheck_seconds:
                last_check = now
                was_active, active = active, False
                if not await still_allowed(was_active):
                    finish(CLOSE_LOGGED_OUT)
                    return

    async def guarded(step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except (ConnectionError, OSError, LabgpuError) as exc:
            log.info("terminal %s of %s: %s", live.id, live.member, exc)
            finish(CLOSE_FAILED)
        except Exception:
            log.exception("terminal %s of %s failed", live.id, live.member)
            finish(CLOSE_FAILED)

    if live.ended_early:
        finish(live.close_code)
    tasks = [asyncio.create_task(guarded(step)) for step in (to_browser, from_browser, watch)]
    try:
        await ended.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The browser first: the daemon may take its time over its closing handshake.
        with contextlib.suppress(Exception):
            await browser.close(live.close_code, CLOSE_REASONS.get(live.close_code, "closed"))
        await stream.close()
    return live.close_code
