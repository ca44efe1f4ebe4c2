"""A TCP connection to a port on an instance's loopback, carried by the daemon's exec WebSocket API.

For a container on another machine the portal cannot open a unix socket there, and no host TCP port is to be
opened for it. What the portal can always reach is the daemon (its unix socket, or HTTPS with labgpu's
client certificate, which only labgpu holds). So each relayed connection is one non-interactive exec of a
small forwarder inside the instance: ``python3 -I -S -c FORWARDER PORT``, run as ``nobody``, which connects
to ``127.0.0.1:PORT`` and copies its stdin to the socket and the socket to its stdout. The daemon gives the
exec four WebSockets (stdin, stdout, stderr, control); once all four are connected the command starts, and
the bytes flow: stdin messages in, stdout messages out, raw and unchanged (no pty).

Closing our side of stdin (a WebSocket close) is an end-of-file for the forwarder: it shuts its socket's
write side and keeps copying the app's answer until the app closes, then exits, and the daemon closes
stdout. The forwarder is a constant; the port is a number from the image's trusted app list; nothing from a
request reaches the command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from labgpu.runtime.errors import RuntimeError_, RuntimeUnavailable

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient

log = logging.getLogger(__name__)

#: The forwarder, run by ``python3 -I -S -c`` (isolated: no user site, no PYTHON* variables, no site
#: module). It reads the port from argv. Exit status 3: the port did not accept the connection.
FORWARDER = """\
import os, select, socket, sys
port = int(sys.argv[1])
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
except OSError as e:
    sys.stderr.write("cannot connect to 127.0.0.1:%d: %s\\n" % (port, e))
    sys.exit(3)
s.settimeout(None)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
reading = True
while True:
    ready = select.select([0, s] if reading else [s], [], [])[0]
    if 0 in ready:
        data = os.read(0, 262144)
        if data:
            s.sendall(data)
        else:
            reading = False
            s.shutdown(socket.SHUT_WR)
    if s in ready:
        data = s.recv(262144)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
"""
#: Who runs the forwarder inside the instance: nobody (Debian and Ubuntu's uid and gid 65534).
FORWARDER_USER = 65534
CHUNK = 256 * 1024


def forwarder_command(port: int) -> list[str]:
    """The argument list of the forwarder for ``port`` (a checked number, never text from a request)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValueError(f"invalid port {port!r}")
    return ["python3", "-I", "-S", "-c", FORWARDER, str(port)]


@dataclass(frozen=True)
class RelayExec:
    """A started forwarder, waiting for its four WebSockets."""

    instance: str
    port: int
    operation_id: str
    secrets: dict[str, str]  # "0", "1", "2", "control" -> secret


def start_relay(client: RuntimeClient, instance: str, port: int) -> RelayExec:
    """Ask the daemon to run the forwarder to ``port`` in ``instance``; it starts once :meth:`RelayStream.connect`
    has connected its WebSockets. One HTTP request; does not wait for the command.

    Raises RuntimeNotFound (no such instance), RuntimeBadRequest/RuntimeError_ (not running, refused),
    RuntimeUnavailable."""
    body: dict[str, Any] = {
        "command": forwarder_command(port),
        "environment": {},
        "interactive": False,
        "wait-for-websocket": True,
        "record-output": False,
        "user": FORWARDER_USER,
        "group": FORWARDER_USER,
        "cwd": "/",
    }
    what = f"relay to port {port} in {instance}"
    answer = client.request("POST", f"/1.0/instances/{quote(instance, safe='')}/exec", what=what, json=body)
    op = answer.get("metadata") or {}
    op_id = str(op.get("id") or str(answer.get("operation", "")).rsplit("/", 1)[-1])
    fds = (op.get("metadata") or {}).get("fds") or {}
    if not all(fds.get(k) for k in ("0", "1", "2", "control")):
        raise RuntimeError_(f"{what}: the daemon gave no exec WebSockets (operation {op_id})")
    return RelayExec(instance, port, op_id, {k: str(fds[k]) for k in ("0", "1", "2", "control")})


def cancel_relay(client: RuntimeClient, started: RelayExec) -> None:
    """Give up on a forwarder whose WebSockets never connected (best effort: the daemon may be gone; as with
    :func:`terminal.cancel_interactive`, the exec fails by itself 5 seconds later when the DELETE is refused)."""
    with contextlib.suppress(Exception):
        client.raw("DELETE", f"/1.0/operations/{quote(started.operation_id, safe='')}", project=False)


async def _websocket(
    client: RuntimeClient, operation_id: str, secret: str, timeout: float
) -> ClientConnection:
    path = f"/1.0/operations/{quote(operation_id, safe='')}/websocket?secret={quote(secret, safe='')}"
    options: dict[str, Any] = {
        "open_timeout": timeout,
        "compression": None,  # an app's bytes: often compressed already, and deflate costs CPU on both ends
        "max_size": 8 * 1024 * 1024,
        "ping_interval": None,  # an idle keep-alive connection stays quiet; the daemon does not need pings
        "close_timeout": 2,  # the daemons answer a close slowly or not at all; do not wait long
    }
    endpoint = client.endpoint
    if endpoint.socket_path is not None:
        return await unix_connect(str(endpoint.socket_path), "ws://runtime" + path, **options)
    url = "wss://" + endpoint.url.split("://", 1)[1] + path
    return await connect(url, ssl=endpoint.ssl_context(), **options)


class RelayStream:
    """The WebSockets of one forwarder: ``send`` writes to the app, ``recv`` reads its answer (b"" at the end),
    ``send_eof`` ends what we send, ``close`` ends everything."""

    def __init__(self, sockets: dict[str, ClientConnection], where: str) -> None:
        self._stdin = sockets["0"]
        self._stdout = sockets["1"]
        self._stderr = sockets["2"]
        self._control = sockets["control"]
        self._where = where
        self._errors = bytearray()
        self._drain = asyncio.create_task(self._read_stderr())

    @classmethod
    async def connect(
        cls, client: RuntimeClient, started: RelayExec, *, timeout: float = 15.0
    ) -> RelayStream:
        """Connect the four WebSockets at once (the daemon starts the forwarder when all are there).

        Raises RuntimeUnavailable when the daemon cannot be reached, RuntimeError_ when it refuses."""
        what = f"relay to port {started.port} in {started.instance}"
        keys = ("0", "1", "2", "control")
        results = await asyncio.gather(
            *(_websocket(client, started.operation_id, started.secrets[k], timeout) for k in keys),
            return_exceptions=True,
        )
        sockets = {k: r for k, r in zip(keys, results, strict=True) if isinstance(r, ClientConnection)}
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for sock in sockets.values():
                with contextlib.suppress(Exception):
                    await sock.close()
            exc = failures[0]
            if isinstance(exc, InvalidStatus):
                raise RuntimeError_(f"{what}: the daemon refused ({exc.response.status_code})") from exc
            if isinstance(exc, InvalidHandshake | OSError | TimeoutError):
                raise RuntimeUnavailable(
                    f"{what}: cannot reach the daemon at {client.endpoint.describe()}: {exc}"
                ) from exc
            raise exc
        return cls(sockets, what)

    async def _read_stderr(self) -> None:
        with contextlib.suppress(ConnectionClosed, OSError):
            async for message in self._stderr:
                data = message.encode() if isinstance(message, str) else bytes(message)
                if len(self._errors) < 4096:
                    self._errors += data[: 4096 - len(self._errors)]

    @property
    def errors(self) -> str:
        """What the forwarder wrote to stderr so far (at most 4 KiB), e.g. why it could not connect."""
        return self._errors.decode("utf-8", "replace").strip()

    async def recv(self) -> bytes:
        """The next bytes from the app; b"" once it has closed its side (or the forwarder ended)."""
        while True:
            try:
                message = await self._stdout.recv()
            except ConnectionClosed:
                return b""
            data = message.encode() if isinstance(message, str) else bytes(message)
            if data:
                return data

    async def send(self, data: bytes) -> None:
        """Send ``data`` to the app. Raises ConnectionError when the forwarder has ended."""
        view = memoryview(data)
        try:
            while view:  # in pieces: one WebSocket message never grows past max_size on the daemon's side
                await self._stdin.send(bytes(view[:CHUNK]))
                view = view[CHUNK:]
        except ConnectionClosed as exc:
            raise ConnectionError(f"{self._where}: the forwarder has ended") from exc

    async def send_eof(self) -> None:
        """End what we send (the forwarder shuts its socket's write side); the answer keeps coming."""
        with contextlib.suppress(Exception):
            await self._stdin.close()

    async def close(self) -> None:
        """Close every WebSocket (the forwarder sees the end of its input and exits). Safe to repeat."""
        for sock in (self._stdin, self._stdout, self._stderr, self._control):
            with contextlib.suppress(Exception):
                await sock.close()
        self._drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._drain
