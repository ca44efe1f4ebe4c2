"""Apps in containers on other hosts: a unix socket of the portal's own, relayed through the daemon's exec API.

A proxy device's unix socket lies on the host whose daemon runs the container, out of the portal's reach
when that is another machine. For such an app the portal listens on a unix socket of its own, in
``apps_socket_dir`` beside the device sockets (the folder 0700, the socket 0600, labgpu's), and every
connection made to it becomes one exec of a forwarder in the container (:mod:`labgpu.runtime.relay`), over
the daemon's unix socket or HTTPS with labgpu's client certificate. The apps origin then reaches a remote app
exactly as a local one (httpx over a unix socket for HTTP, kept alive and pooled; websockets' unix_connect),
and nothing but labgpu can open that socket or that daemon connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from labgpu.errors import LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.relay import CHUNK, RelayStream, cancel_relay, start_relay

log = logging.getLogger(__name__)

#: After we have sent our end of a connection, how long the app gets to finish its answer and close.
EOF_GRACE_SECONDS = 30.0


@dataclass(frozen=True)
class Relay:
    """How to reach an app in a container on another host: that host's daemon, the container, the port."""

    runtime: RuntimeClient
    container: str
    port: int
    where: str  # the host, for logs

    @property
    def key(self) -> tuple[int, str, int]:
        return (id(self.runtime), self.container, self.port)


def relay_socket_name(member: str, app: str) -> str:
    """The file name of the portal's own socket for ``member``'s ``app`` (per process: two portal processes
    never share one)."""
    digest = hashlib.sha256(f"relay\0{member}\0{app}".encode()).hexdigest()[:16]
    return f"r{digest}-{os.getpid()}.sock"


class AppRelays:
    """The relay sockets of one portal process (one per app in use), served on its event loop."""

    def __init__(self) -> None:
        self._servers: dict[Path, tuple[tuple[int, str, int], asyncio.Server]] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self.opened = 0  # connections relayed so far (read by tests and benchmarks)

    async def ensure(self, socket: Path, relay: Relay) -> None:
        """Listen on ``socket`` for ``relay`` unless that is done already (a socket that now stands for another
        container or host, after a move, is made again)."""
        async with self._lock:
            known = self._servers.get(socket)
            if known is not None and known[0] == relay.key and socket.exists():
                return
            if known is not None:
                known[1].close()
            folder = socket.parent
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            socket.unlink(missing_ok=True)
            server = await asyncio.start_unix_server(
                lambda r, w: self._serve(relay, r, w), path=str(socket), limit=CHUNK
            )
            socket.chmod(0o600)
            self._servers[socket] = (relay.key, server)

    async def _serve(self, relay: Relay, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._relay(relay, reader, writer)
        except asyncio.CancelledError:
            # The portal stops (close). Ending quietly: asyncio's streams log a connection handler that ends
            # cancelled as an error.
            with contextlib.suppress(OSError):
                writer.close()
        finally:
            self._tasks.discard(task)

    async def _relay(self, relay: Relay, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            started = await asyncio.to_thread(start_relay, relay.runtime, relay.container, relay.port)
            try:
                stream = await RelayStream.connect(relay.runtime, started)
            except BaseException:
                await asyncio.to_thread(cancel_relay, relay.runtime, started)
                raise
        except (LabgpuError, OSError) as exc:
            log.warning("app relay to %s:%s on %s: %s", relay.container, relay.port, relay.where, exc)
            writer.close()
            return
        await _pump(stream, reader, writer, relay)

    async def close(self) -> None:
        """Stop listening and remove the sockets (the portal stops)."""
        async with self._lock:
            for socket, (_, server) in self._servers.items():
                server.close()
                socket.unlink(missing_ok=True)
            self._servers.clear()
        loop = asyncio.get_running_loop()
        tasks = [t for t in self._tasks if t.get_loop() is loop]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pump(
    stream: RelayStream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, relay: Relay
) -> None:
    """Copy both ways until the app's side ends (it closed, or it had our end of input and EOF_GRACE_SECONDS
    passed), then close both."""
    answered = False

    async def up() -> None:
        with contextlib.suppress(ConnectionError):  # the forwarder ended: its last answer still comes down
            while data := await reader.read(CHUNK):
                await stream.send(data)
            await stream.send_eof()
        await asyncio.sleep(EOF_GRACE_SECONDS)

    async def down() -> None:
        nonlocal answered
        while data := await stream.recv():
            answered = True
            writer.write(data)
            await writer.drain()

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError, LabgpuError):
                await task
        if not answered and stream.errors:
            log.info("app relay to %s:%s on %s: %s", relay.container, relay.port, relay.where, stream.errors)
        await stream.close()
        with contextlib.suppress(OSError):
            writer.close()
