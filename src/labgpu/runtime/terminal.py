"""Interactive exec: a command on a pseudo-terminal inside an instance, reached over the daemon's WebSockets.

``POST /1.0/instances/NAME/exec`` with ``interactive`` and ``wait-for-websocket`` makes a background
operation whose metadata holds two secrets: one for the terminal's data (stdin and stdout/stderr together,
the pty's bytes) and one for the control channel (window size, signals). The command starts once both
WebSockets are connected to ``/1.0/operations/ID/websocket?secret=...``, over the daemon's unix socket or
over HTTPS with labgpu's client certificate, the way every other request of the client goes.

:func:`start_interactive` is synchronous (one HTTP request, like the rest of the client);
:class:`ExecStream` is the asyncio side that a web server's event loop pumps bytes through. The command is
an argument list, never a shell string built from input.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from labgpu.runtime.errors import RuntimeError_, RuntimeUnavailable

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient

# Terminal sizes the daemon is asked for are kept in this range (a browser reports its own).
MIN_SIZE, MAX_COLS, MAX_ROWS = 1, 1000, 500


def clamp_size(cols: int, rows: int) -> tuple[int, int]:
    """A window size the daemon accepts: whole columns and rows within sane bounds."""
    return max(MIN_SIZE, min(int(cols), MAX_COLS)), max(MIN_SIZE, min(int(rows), MAX_ROWS))


@dataclass(frozen=True)
class InteractiveExec:
    """A started interactive exec, waiting for its two WebSockets."""

    instance: str
    operation_id: str
    data_secret: str
    control_secret: str


def start_interactive(
    client: RuntimeClient,
    instance: str,
    command: list[str],
    *,
    environment: dict[str, str] | None = None,
    cols: int = 80,
    rows: int = 24,
    cwd: str | None = None,
) -> InteractiveExec:
    """Ask the daemon to run ``command`` (an argument list) on a pty in ``instance``; it starts when both
    WebSockets are connected (:meth:`ExecStream.connect`). Does not wait for the command.

    Raises RuntimeNotFound (no such instance), RuntimeBadRequest/RuntimeError_ (not running, refused),
    RuntimeUnavailable."""
    if not command or not all(isinstance(a, str) for a in command):
        raise ValueError("command must be a non-empty list of strings")
    width, height = clamp_size(cols, rows)
    body: dict[str, Any] = {
        "command": command,
        "environment": environment or {},
        "interactive": True,
        "wait-for-websocket": True,
        "record-output": False,
        "width": width,
        "height": height,
    }
    if cwd is not None:
        body["cwd"] = cwd
    what = f"open a terminal in {instance}"
    answer = client.request("POST", f"/1.0/instances/{quote(instance, safe='')}/exec", what=what, json=body)
    op = answer.get("metadata") or {}
    op_id = str(op.get("id") or str(answer.get("operation", "")).rsplit("/", 1)[-1])
    fds = (op.get("metadata") or {}).get("fds") or {}
    if not fds.get("0") or not fds.get("control"):
        raise RuntimeError_(f"{what}: the daemon gave no terminal WebSockets (operation {op_id})")
    return InteractiveExec(
        instance=instance,
        operation_id=str(op_id),
        data_secret=str(fds["0"]),
        control_secret=str(fds["control"]),
    )


def exec_websocket_path(started: InteractiveExec, secret: str) -> str:
    """The path (on the daemon's socket or HTTPS address) of one of ``started``'s WebSockets: ``secret`` is
    its ``data_secret`` or its ``control_secret``."""
    return f"/1.0/operations/{quote(started.operation_id, safe='')}/websocket?secret={quote(secret, safe='')}"


def cancel_interactive(client: RuntimeClient, started: InteractiveExec) -> None:
    """Give up on an exec whose WebSockets never connected (best effort: the daemon may be gone). The DELETE
    is refused by LXD 5.0 ("can't be cancelled") and taken by Incus 6.0; either way such an exec fails by
    itself once its WebSockets have not all come within 5 seconds (seen on both), so nothing is left running."""
    with contextlib.suppress(Exception):
        client.raw("DELETE", f"/1.0/operations/{quote(started.operation_id, safe='')}", project=False)


class ExecStream:
    """The two WebSockets of one interactive exec, for an asyncio event loop.

    ``recv`` gives the terminal's output (None once the command has ended and its output is drained);
    ``send`` types into it; ``resize`` and ``hangup`` go through the control channel; ``close`` ends both."""

    def __init__(self, data: ClientConnection, control: ClientConnection) -> None:
        self._data = data
        self._control = control

    @classmethod
    async def connect(
        cls, client: RuntimeClient, started: InteractiveExec, *, timeout: float = 15.0
    ) -> ExecStream:
        """Connect both WebSockets (at once: the daemon starts the command when both are there).

        Raises RuntimeUnavailable when the daemon cannot be reached, RuntimeError_ when it refuses."""

        async def one(secret: str) -> ClientConnection:
            path = exec_websocket_path(started, secret)
            options: dict[str, Any] = {
                "open_timeout": timeout,
                "compression": None,  # keystrokes are a few bytes: no deflate, no latency for it
                "max_size": 4 * 1024 * 1024,
                "ping_interval": 30,
                "ping_timeout": 30,
                "close_timeout": 2,  # the daemons answer a close slowly or not at all; do not wait long
            }
            endpoint = client.endpoint
            if endpoint.socket_path is not None:
                return await unix_connect(str(endpoint.socket_path), "ws://runtime" + path, **options)
            url = "wss://" + endpoint.url.split("://", 1)[1] + path
            return await connect(url, ssl=endpoint.ssl_context(), **options)

        what = f"open a terminal in {started.instance}"
        results = await asyncio.gather(
            one(started.data_secret), one(started.control_secret), return_exceptions=True
        )
        sockets = [r for r in results if isinstance(r, ClientConnection)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for sock in sockets:
                await sock.close()
            exc = failures[0]
            if isinstance(exc, InvalidStatus):
                raise RuntimeError_(
                    f"{what}: the daemon refused the terminal ({exc.response.status_code})"
                ) from exc
            if isinstance(exc, InvalidHandshake | OSError | TimeoutError):
                raise RuntimeUnavailable(
                    f"{what}: cannot reach the daemon at {client.endpoint.describe()}: {exc}"
                ) from exc
            raise exc
        return cls(sockets[0], sockets[1])

    async def recv(self) -> bytes | None:
        """The next output of the terminal; None when the command has ended (or the daemon went away)."""
        try:
            message = await self._data.recv()
        except ConnectionClosed:
            return None
        data = message.encode() if isinstance(message, str) else bytes(message)
        if not data:
            # The daemons' end-of-output mark (LXD 5.0 and Incus 6.0 alike); they then wait for us to
            # close, and drop the control channel.
            return None
        return data

    async def send(self, data: bytes) -> None:
        """Type ``data`` into the terminal. Raises ConnectionError when the command has ended."""
        try:
            await self._data.send(data)
        except ConnectionClosed as exc:
            raise ConnectionError("the terminal has ended") from exc

    async def _control_message(self, message: dict[str, Any]) -> None:
        try:
            await self._control.send(json.dumps(message))
        except ConnectionClosed as exc:
            raise ConnectionError("the terminal has ended") from exc

    async def resize(self, cols: int, rows: int) -> None:
        """Tell the pty its new window size (the daemon wants the numbers as strings)."""
        width, height = clamp_size(cols, rows)
        await self._control_message(
            {"command": "window-resize", "args": {"width": str(width), "height": str(height)}}
        )

    async def hangup(self) -> None:
        """Send SIGHUP to the command, as a terminal that goes away does (a shell ends, tmux detaches)."""
        await self._control_message({"command": "signal", "signal": int(signal.SIGHUP)})

    async def close(self) -> None:
        """Hang up the command and close both WebSockets (normal closures: the daemon then kills nothing
        else). Safe to call more than once."""
        with contextlib.suppress(ConnectionError, OSError):
            await self.hangup()
        for sock in (self._data, self._control):
            with contextlib.suppress(Exception):
                await sock.close()
