"""The LXD/Incus REST client: transport, one request method, operations, server info.

Resources (instances, images, profiles, storage pools, networks) live in their
own modules and are reached as attributes (``client.instances``); building a
client does no I/O. Every state-changing call waits for its background
operation explicitly (``wait=True`` by default, with a timeout) or returns the
operation id for the caller to wait on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from labgpu.runtime.endpoint import Endpoint, detect_endpoint
from labgpu.runtime.errors import (
    OperationTimeout,
    RuntimeUnavailable,
    error_from_operation,
    error_from_status,
    raise_for_response,
)

if TYPE_CHECKING:
    from labgpu.runtime.images import Images
    from labgpu.runtime.instances import Instances
    from labgpu.runtime.networks import Networks
    from labgpu.runtime.profiles import Profiles
    from labgpu.runtime.storage import StoragePools
    from labgpu.settings import Settings


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /1.0`` says about the daemon."""

    kind: str  # "lxd" or "incus"
    version: str
    api_version: str
    api_extensions: frozenset[str]
    server_name: str
    clustered: bool
    trusted: bool
    kernel: str = ""
    storage_drivers: tuple[str, ...] = ()
    certificate_fingerprint: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def has(self, extension: str) -> bool:
        return extension in self.api_extensions

    @property
    def label(self) -> str:
        return "Incus" if self.kind == "incus" else "LXD"


def parse_server_info(meta: dict[str, Any]) -> ServerInfo:
    env = meta.get("environment") or {}
    server = str(env.get("server") or "lxd").lower()
    drivers = tuple(str(d.get("Name", "")) for d in env.get("storage_supported_drivers") or [])
    if not drivers and env.get("storage"):
        drivers = tuple(str(env["storage"]).split(" | "))
    return ServerInfo(
        kind="incus" if "incus" in server else "lxd",
        version=str(env.get("server_version", "")),
        api_version=str(meta.get("api_version", "")),
        api_extensions=frozenset(meta.get("api_extensions") or []),
        server_name=str(env.get("server_name", "")),
        clustered=bool(env.get("server_clustered", False)),
        trusted=meta.get("auth") == "trusted",
        kernel=str(env.get("kernel_version", "")),
        storage_drivers=drivers,
        certificate_fingerprint=str(env.get("certificate_fingerprint", "")),
        raw=meta,
    )


class RuntimeClient:
    """A client for one LXD or Incus daemon (or one cluster, reached through any member)."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout: float = 30.0,
        operation_timeout: float = 300.0,
        project: str = "default",
        target: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.operation_timeout = operation_timeout
        self.project = project
        # The cluster member this client stands for (a host that is one member of a cluster): new
        # instances and host resources go to it. None: a standalone daemon, or the cluster as a whole.
        self.target = target
        self.request_count = 0  # read by benchmarks and tests: how many HTTP requests we made
        self.wait_chunk = 60.0  # seconds of one /wait request; longer waits ask again
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._server: ServerInfo | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimeClient:
        """A client for the configured (or auto-detected) daemon. Does no I/O except socket detection."""
        if settings.runtime_url:
            endpoint = Endpoint.parse(
                settings.runtime_url,
                client_cert=settings.runtime_client_cert,
                client_key=settings.runtime_client_key,
                server_cert=settings.runtime_server_cert,
            )
        else:
            endpoint = detect_endpoint()
        return cls(
            endpoint,
            timeout=settings.runtime_timeout,
            operation_timeout=settings.operation_timeout,
            project=settings.runtime_project,
        )

    # Resources ---------------------------------------------------------------

    @property
    def instances(self) -> Instances:
        from labgpu.runtime.instances import Instances

        return Instances(self)

    @property
    def images(self) -> Images:
        from labgpu.runtime.images import Images

        return Images(self)

    @property
    def profiles(self) -> Profiles:
        from labgpu.runtime.profiles import Profiles

        return Profiles(self)

    @property
    def storage_pools(self) -> StoragePools:
        from labgpu.runtime.storage import StoragePools

        return StoragePools(self)

    @property
    def networks(self) -> Networks:
        from labgpu.runtime.networks import Networks

        return Networks(self)

    # Transport ---------------------------------------------------------------

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                if self.endpoint.socket_path is not None:
                    transport = httpx.HTTPTransport(uds=str(self.endpoint.socket_path))
                    self._http = httpx.Client(
                        transport=transport, base_url="http://runtime", timeout=self.timeout
                    )
                else:
                    self._http = httpx.Client(
                        base_url=self.endpoint.url,
                        verify=self.endpoint.ssl_context(),
                        timeout=self.timeout,
                    )
            return self._http

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> RuntimeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unavailable(self, exc: Exception) -> RuntimeUnavailable:
        where = self.endpoint.describe()
        if isinstance(exc, httpx.TimeoutException):
            what = f"did not answer within {self.timeout:g}s"
        else:
            what = str(exc) or type(exc).__name__
        return RuntimeUnavailable(
            f"cannot reach the LXD/Incus daemon at {where}: {what}",
            hint=(
                "start the daemon: systemctl start lxd (snap: snap start lxd; Incus: systemctl start incus), "
                "or scripts/start-daemons on machines without systemd"
                if self.endpoint.is_unix
                else "is the daemon running on that host, and is core.https_address set?"
            ),
        )

    def _params(self, params: dict[str, Any] | None, project: bool) -> dict[str, Any]:
        out = dict(params or {})
        if project and self.project != "default":
            out.setdefault("project", self.project)
        return out

    def raw(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: Any = None,
        files: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        project: bool = True,
    ) -> httpx.Response:
        """Send one request and return the response as it is (no status check)."""
        client = self._client()
        self.request_count += 1
        try:
            return client.request(
                method,
                path,
                params=self._params(params, project),
                json=json,
                content=content,
                files=files,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
        except (httpx.TransportError, OSError) as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Iterator[httpx.Response]:
        """Send one request and yield the response with its body unread (big downloads: image export).

        Raises the typed error of a failed response before yielding."""
        client = self._client()
        self.request_count += 1
        try:
            with client.stream(
                method,
                path,
                params=self._params(params, True),
                timeout=timeout if timeout is not None else self.timeout,
            ) as response:
                if not response.is_success:
                    response.read()
                    raise_for_response(response, what)
                yield response
        except httpx.TransportError as exc:  # not OSError: the caller's own (a full disk) stays what it is
            raise self._unavailable(exc) from exc

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: Any = None,
        files: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        project: bool = True,
    ) -> dict[str, Any]:
        """Send one request; return the decoded body or raise a typed error."""
        response = self.raw(
            method,
            path,
            params=params,
            json=json,
            content=content,
            files=files,
            headers=headers,
            timeout=timeout,
            project=project,
        )
        return raise_for_response(response, what)

    def get(
        self,
        path: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        project: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """GET and return the ``metadata`` of the answer (within ``timeout`` seconds, default: the client's)."""
        return self.request("GET", path, what=what, params=params, project=project, timeout=timeout).get(
            "metadata"
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        files: Any = None,
        content: Any = None,
        wait: bool = True,
        timeout: float | None = None,
        project: bool = True,
    ) -> Any:
        """A state-changing request. For a background operation, wait for it when
        ``wait`` (raising OperationFailed/OperationTimeout) and return its
        metadata; otherwise return the operation id. Sync answers return their metadata."""
        body = self.request(
            method,
            path,
            what=what,
            json=json,
            params=params,
            headers=headers,
            files=files,
            content=content,
            project=project,
            timeout=timeout,
        )
        if body.get("type") == "async":
            op = body.get("metadata") or {}
            op_id = str(op.get("id") or str(body.get("operation", "")).rsplit("/", 1)[-1])
            if not wait:
                return op_id
            return self.wait(op_id, what=what, timeout=timeout)
        return body.get("metadata")

    def wait(self, operation_id: str, *, what: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for a background operation to end; return its metadata.

        Raises OperationFailed when it failed, OperationTimeout when it is
        still running after ``timeout`` seconds (default: operation_timeout)."""
        limit = self.operation_timeout if timeout is None else timeout
        waited = 0.0
        while True:
            # Long waits are split so that no single HTTP request outlives its read timeout.
            step = max(1.0, min(limit - waited, self.wait_chunk))
            response = self.raw(
                "GET",
                f"/1.0/operations/{operation_id}/wait",
                params={"timeout": int(step)},
                timeout=step + self.timeout,
                project=False,
            )
            if response.status_code == 404:
                # Finished and already forgotten: only happens after a very long gap.
                raise error_from_status(404, f"{what}: operation {operation_id} is gone")
            if _wait_timed_out(response):
                op: dict[str, Any] = {}  # still running (Incus says so with an error, LXD with the operation)
            else:
                op = raise_for_response(response, what).get("metadata") or {}
            status = op.get("status")
            if status == "Success":
                return dict(op)
            if status in ("Failure", "Cancelled"):
                raise error_from_operation(f"{what}: {op.get('err') or status}")
            waited += step
            if waited >= limit:
                raise OperationTimeout(
                    f"{what}: still running after {limit:g}s (operation {operation_id})",
                    hint="it may still finish; check with `lxc operation list` / `incus operation list`",
                )

    # Server --------------------------------------------------------------------

    def server(self, *, refresh: bool = False, timeout: float | None = None) -> ServerInfo:
        """The daemon's kind, version and API extensions (``GET /1.0``; cached after the first call,
        asked again with ``refresh``). ``timeout`` bounds the request (default: the client's)."""
        if self._server is None or refresh:
            meta = self.get("/1.0", what="read server info", project=False, timeout=timeout)
            self._server = parse_server_info(meta or {})
        return self._server

    @property
    def header_prefix(self) -> str:
        """Prefix of the daemon's custom headers (X-LXD-uid vs X-Incus-uid)."""
        return "X-Incus-" if self.server().kind == "incus" else "X-LXD-"

    def resources(self, *, target: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Hardware of the host: CPU, memory, GPUs (``GET /1.0/resources``); of the client's own
        cluster member unless ``target`` names another. ``timeout`` bounds the request."""
        target = target or self.target
        params = {"target": target} if target else None
        result: dict[str, Any] = (
            self.get(
                "/1.0/resources", what="read host resources", params=params, project=False, timeout=timeout
            )
            or {}
        )
        return result

    def cluster_members(self) -> list[dict[str, Any]]:
        """Members of the cluster (empty when the daemon is standalone)."""
        if not self.server().clustered:
            return []
        members: list[dict[str, Any]] = self.get(
            "/1.0/cluster/members", what="list cluster members", params={"recursion": 1}, project=False
        )
        return members

    # Server configuration and trust ------------------------------------------

    def update_server_config(self, changes: dict[str, str | None]) -> None:
        """Set (or, with None, unset) server config keys such as core.https_address."""
        # PATCH merges: keys left out stay as they are (write-only ones such as core.trust_password
        # included), and an empty value is what unsets a key.
        config = {key: "" if value is None else value for key, value in changes.items()}
        self.call("PATCH", "/1.0", what="update server config", json={"config": config}, project=False)
        self._server = None

    def trust_certificate(self, cert_pem: str, *, name: str) -> str:
        """Add a client certificate to the daemon's trust store; return its fingerprint."""
        from labgpu.runtime.certs import certificate_fingerprint

        body = {"type": "client", "name": name, "certificate": _pem_body(cert_pem)}
        self.call("POST", "/1.0/certificates", what=f"trust certificate {name}", json=body, project=False)
        return certificate_fingerprint(cert_pem)

    def redeem_trust(
        self, cert_pem: str, *, name: str, token: str | None = None, password: str | None = None
    ) -> str:
        """Have an UNTRUSTED client's certificate trusted by the daemon itself, with a one-time trust token
        (``incus config trust add NAME`` / ``lxc config trust add --name NAME``) or the legacy trust
        password (LXD's ``core.trust_password``). Returns the certificate's fingerprint.

        Incus reads the token from ``trust_token``, LXD 5.0 from ``password``; both are sent, each daemon
        ignores the field it does not know. Raises RuntimeForbidden when the daemon refuses."""
        from labgpu.runtime.certs import certificate_fingerprint

        if (token is None) == (password is None):
            raise ValueError("give a token or a password")
        secret = token if token is not None else password
        body: dict[str, Any] = {
            "type": "client",
            "name": name,
            "certificate": _pem_body(cert_pem),
            "password": secret,
        }
        if token is not None:
            body["trust_token"] = token
        self.call("POST", "/1.0/certificates", what="trust labgpu's certificate", json=body, project=False)
        self._server = None
        return certificate_fingerprint(cert_pem)

    def untrust_certificate(
        self, fingerprint: str, *, what: str = "remove trusted certificate", timeout: float | None = None
    ) -> None:
        """Remove a certificate from the daemon's trust store. Raises RuntimeNotFound when it is not there;
        ``timeout`` bounds the request (a host that is gone must not hold its removal up)."""
        self.call(
            "DELETE",
            f"/1.0/certificates/{quote(fingerprint, safe='')}",
            what=what,
            project=False,
            timeout=timeout,
        )


def _wait_timed_out(response: httpx.Response) -> bool:
    """Whether a ``/wait?timeout=N`` answer only says that N seconds passed: Incus 6.0 answers with an
    error body ("context deadline exceeded", HTTP 200) where LXD returns the still-running operation."""
    try:
        body = response.json()
    except ValueError:
        return False
    return (
        isinstance(body, dict)
        and body.get("type") == "error"
        and "deadline exceeded" in str(body.get("error", ""))
    )


def _pem_body(pem: str) -> str:
    """The base64 body of a PEM certificate, as the certificates API wants it."""
    lines = [line for line in pem.strip().splitlines() if not line.startswith("-----")]
    return "".join(lines)
