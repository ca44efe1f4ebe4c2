"""Where the LXD/Incus API is, and how to reach it.

Auto-detection order (unless ``runtime_url`` is set): ``$LXD_DIR`` and
``$INCUS_DIR`` sockets, the snap LXD socket, ``/var/lib/lxd/unix.socket``,
``/var/lib/incus/unix.socket``.
"""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from labgpu.errors import ConfigError
from labgpu.runtime.errors import RuntimeUnavailable

SNAP_LXD_SOCKET = Path("/var/snap/lxd/common/lxd/unix.socket")
DEB_LXD_SOCKET = Path("/var/lib/lxd/unix.socket")
INCUS_SOCKET = Path("/var/lib/incus/unix.socket")


@dataclass(frozen=True)
class Endpoint:
    """A daemon address: a unix socket path or an HTTPS URL with certificates."""

    url: str
    socket_path: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    server_cert: Path | None = None

    @property
    def is_unix(self) -> bool:
        return self.socket_path is not None

    def describe(self) -> str:
        return str(self.socket_path) if self.socket_path else self.url

    @classmethod
    def unix(cls, path: Path) -> Endpoint:
        return cls(url=f"unix://{path}", socket_path=path)

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        server_cert: Path | None = None,
    ) -> Endpoint:
        """Parse ``unix:///path`` or ``https://host:port``; raise ConfigError otherwise."""
        parsed = urlparse(url)
        if parsed.scheme == "unix":
            path = Path(parsed.path or parsed.netloc)
            if not path.is_absolute():
                raise ConfigError(f"runtime_url {url!r}: the socket path must be absolute")
            return cls.unix(path)
        if parsed.scheme == "https" and parsed.hostname:
            if (client_cert is None) != (client_key is None):
                raise ConfigError("runtime_client_cert and runtime_client_key must be set together")
            return cls(
                url=url.rstrip("/"), client_cert=client_cert, client_key=client_key, server_cert=server_cert
            )
        raise ConfigError(
            f"runtime_url {url!r} is not understood: use unix:///var/lib/lxd/unix.socket or https://host:8443"
        )

    def ssl_context(self) -> ssl.SSLContext:
        """TLS settings: the daemon's certificate pinned when given, else the system CAs."""
        if self.server_cert is not None:
            ctx = ssl.create_default_context(cafile=str(self.server_cert))
            # A pinned self-signed certificate is the trust anchor itself; its
            # name rarely matches the address we dial.
            ctx.check_hostname = False
        else:
            ctx = ssl.create_default_context()
        if self.client_cert is not None and self.client_key is not None:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def candidate_sockets(env: Mapping[str, str] | None = None) -> list[Path]:
    """The sockets auto-detection tries, in order."""
    env = os.environ if env is None else env
    out: list[Path] = []
    for var in ("LXD_DIR", "INCUS_DIR"):
        if env.get(var):
            out.append(Path(env[var]) / "unix.socket")
    out += [SNAP_LXD_SOCKET, DEB_LXD_SOCKET, INCUS_SOCKET]
    return out


def _is_socket(path: Path) -> bool:
    try:
        return stat.S_ISSOCK(path.stat().st_mode)
    except OSError:
        return False


def detect_endpoint(env: Mapping[str, str] | None = None) -> Endpoint:
    """The first candidate socket that exists; RuntimeUnavailable naming them all otherwise."""
    candidates = candidate_sockets(env)
    for path in candidates:
        if _is_socket(path):
            return Endpoint.unix(path)
    raise RuntimeUnavailable(
        "no LXD or Incus daemon found; looked for " + ", ".join(str(p) for p in candidates),
        hint="start the daemon (systemctl start lxd, snap start lxd, or scripts/start-daemons), "
        "or set runtime_url",
    )
