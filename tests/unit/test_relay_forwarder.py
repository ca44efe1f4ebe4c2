"""The relay's forwarder (runtime/relay.py: FORWARDER), run here as it runs in a container: stdin/stdout to a
TCP port on 127.0.0.1. Bytes pass unchanged both ways; the end of its input half-closes the connection and
the app's whole answer still comes out; a port that refuses is exit status 3 with the reason on stderr. The
daemon's side (exec WebSockets) is tested against real daemons in tests/integration/multihost/test_apps_remote.py.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from labgpu.runtime.relay import forwarder_command


@pytest.fixture
def upper_server() -> Iterator[int]:
    """A TCP server that reads everything until the client's end, then answers it upper-cased and closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(data.upper())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    thread.join(5)


def _run(port: int, data: bytes) -> subprocess.CompletedProcess[bytes]:
    argv = forwarder_command(port)
    assert argv[0] == "python3"
    return subprocess.run([sys.executable, *argv[1:]], input=data, capture_output=True, timeout=30)


def test_bytes_pass_both_ways_and_the_answer_outlives_the_end_of_input(upper_server: int) -> None:
    data = bytes(range(256)) * 4096 + b"last words"  # 1 MiB of every byte value
    result = _run(upper_server, data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data.upper()


def test_a_port_that_refuses_is_exit_status_3_with_the_reason() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        result = _run(port, b"")
    assert result.returncode == 3
    assert f"cannot connect to 127.0.0.1:{port}" in result.stderr.decode()


@pytest.mark.parametrize("port", [0, 65536, -1, True, "8888"])
def test_only_a_port_number_reaches_the_command(port: object) -> None:
    with pytest.raises(ValueError):
        forwarder_command(port)  # type: ignore[arg-type]
