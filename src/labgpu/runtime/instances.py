"""Instances: create in one request, state changes, devices, exec, files."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import httpx

from labgpu.runtime.errors import RuntimeConflict, RuntimeError_, RuntimeNotFound, raise_for_response

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient
    from labgpu.runtime.images import RemoteImage

Devices = dict[str, dict[str, str]]


@dataclass(frozen=True)
class InstanceState:
    status: str
    pid: int = 0
    processes: int = 0
    memory_usage: int = 0
    cpu_usage_ns: int = 0
    ipv4: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> InstanceState:
        addrs: list[str] = []
        for nic_name, nic in (data.get("network") or {}).items():
            if nic_name == "lo":
                continue
            for addr in nic.get("addresses") or []:
                if addr.get("family") == "inet" and addr.get("scope") == "global":
                    addrs.append(str(addr.get("address")))
        return cls(
            status=str(data.get("status", "")),
            pid=int(data.get("pid") or 0),
            processes=int(data.get("processes") or 0),
            memory_usage=int((data.get("memory") or {}).get("usage") or 0),
            cpu_usage_ns=int((data.get("cpu") or {}).get("usage") or 0),
            ipv4=tuple(addrs),
        )


@dataclass(frozen=True)
class Instance:
    name: str
    status: str
    type: str
    config: dict[str, str]
    devices: Devices
    profiles: tuple[str, ...]
    expanded_config: dict[str, str] = field(default_factory=dict)
    expanded_devices: Devices = field(default_factory=dict)
    location: str = ""
    created_at: str = ""
    description: str = ""
    state: InstanceState | None = None
    etag: str = ""
    architecture: str = ""

    @property
    def running(self) -> bool:
        return self.status == "Running"

    def label(self, key: str) -> str | None:
        """A ``user.labgpu.*`` key of this instance, or None."""
        return self.config.get(f"user.labgpu.{key}")

    @property
    def owned_by_labgpu(self) -> bool:
        return "user.labgpu.owner" in self.config

    @classmethod
    def from_api(cls, data: dict[str, Any], etag: str = "") -> Instance:
        state = data.get("state")
        return cls(
            name=str(data["name"]),
            status=str(data.get("status", "")),
            type=str(data.get("type", "container")),
            config={str(k): str(v) for k, v in (data.get("config") or {}).items()},
            devices={
                str(k): {str(a): str(b) for a, b in v.items()} for k, v in (data.get("devices") or {}).items()
            },
            profiles=tuple(data.get("profiles") or ()),
            expanded_config={str(k): str(v) for k, v in (data.get("expanded_config") or {}).items()},
            expanded_devices={
                str(k): {str(a): str(b) for a, b in v.items()}
                for k, v in (data.get("expanded_devices") or {}).items()
            },
            location=str(data.get("location") or ""),
            created_at=str(data.get("created_at") or ""),
            description=str(data.get("description") or ""),
            state=InstanceState.from_api(state) if isinstance(state, dict) else None,
            etag=etag,
            architecture=str(data.get("architecture") or ""),
        )


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _path(name: str) -> str:
    return f"/1.0/instances/{quote(name, safe='')}"


class Instances:
    """The ``/1.0/instances`` resource of one client."""

    def __init__(self, client: RuntimeClient) -> None:
        self._c = client

    def all(
        self, *, with_state: bool = True, all_projects: bool = False, timeout: float | None = None
    ) -> list[Instance]:
        """All instances in ONE request (``recursion=2`` includes their state); of every member of a
        cluster. ``timeout`` bounds the request (default: the client's)."""
        params: dict[str, Any] = {"recursion": 2 if with_state else 1}
        if all_projects:
            params["all-projects"] = "true"
        data = self._c.get(
            "/1.0/instances", what="list instances", params=params, project=not all_projects, timeout=timeout
        )
        return [Instance.from_api(d) for d in data or []]

    def get(self, name: str, *, with_state: bool = False) -> Instance:
        """One instance (with its ETag for safe updates). Raises RuntimeNotFound."""
        params = {"recursion": 1} if with_state else None
        response = self._c.raw("GET", _path(name), params=params)
        body = raise_for_response(response, f"get instance {name}")
        return Instance.from_api(body["metadata"], etag=response.headers.get("ETag", ""))

    def exists(self, name: str) -> bool:
        try:
            self.get(name)
        except RuntimeNotFound:
            return False
        return True

    def create(
        self,
        name: str,
        *,
        image: str | None = None,
        fingerprint: str | None = None,
        remote_image: RemoteImage | None = None,
        config: dict[str, str] | None = None,
        devices: Devices | None = None,
        profiles: list[str] | None = None,
        description: str = "",
        target: str | None = None,
        start: bool = False,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """Create a container from a local image (alias or fingerprint), or from an image
        the daemon pulls from a simplestreams server (``remote_image``), with its whole
        config and devices in ONE request; optionally start it.

        On a client that stands for one cluster member (``client.target``) the container
        is made on that member unless ``target`` names another.

        Waits for the operation when ``wait``. Raises RuntimeConflict when the
        name is taken, RuntimeNotFound when the image is missing."""
        if sum(x is not None for x in (image, fingerprint, remote_image)) != 1:
            raise ValueError("give exactly one of image, fingerprint or remote_image")
        if image is not None:
            # Resolved here because the daemons' own answer for a missing alias
            # ranges from a clear 404 to a vague 500 ("Image not provided").
            fingerprint = self._c.images.resolve_alias(image)
            if fingerprint is None:
                raise RuntimeNotFound(f"create instance {name}: image {image!r} not found")
        source: dict[str, Any] = (
            remote_image.source()
            if remote_image is not None
            else {"type": "image", "fingerprint": fingerprint}
        )
        body: dict[str, Any] = {
            "name": name,
            "type": "container",
            "source": source,
            "config": config or {},
            "devices": devices or {},
            "description": description,
        }
        if profiles is not None:
            body["profiles"] = profiles
        # LXD 5.0 lacks "instance_create_start" and silently ignores the flag.
        start_after = start and not self._c.server().has("instance_create_start")
        if start and not start_after:
            body["start"] = True
        target = target or self._c.target
        params = {"target": target} if target else None
        if start_after:
            self._c.call(
                "POST",
                "/1.0/instances",
                what=f"create instance {name}",
                json=body,
                params=params,
                timeout=timeout,
            )
            return self.start(name, wait=wait, timeout=timeout)
        return self._c.call(
            "POST",
            "/1.0/instances",
            what=f"create instance {name}",
            json=body,
            params=params,
            wait=wait,
            timeout=timeout,
        )

    def set_state(
        self,
        name: str,
        action: str,
        *,
        force: bool = False,
        stop_timeout: int = 30,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Any:
        """start / stop / restart / freeze / unfreeze. Waits when ``wait``."""
        body = {"action": action, "timeout": stop_timeout, "force": force}
        return self._c.call(
            "PUT",
            _path(name) + "/state",
            what=f"{action} instance {name}",
            json=body,
            wait=wait,
            timeout=timeout,
        )

    def start(self, name: str, **kw: Any) -> Any:
        return self.set_state(name, "start", **kw)

    def stop(self, name: str, *, force: bool = False, **kw: Any) -> Any:
        return self.set_state(name, "stop", force=force, **kw)

    def restart(self, name: str, *, force: bool = False, **kw: Any) -> Any:
        return self.set_state(name, "restart", force=force, **kw)

    def delete(self, name: str, *, wait: bool = True, timeout: float | None = None) -> Any:
        """Delete a stopped instance. Raises RuntimeNotFound when it does not exist."""
        return self._c.call("DELETE", _path(name), what=f"delete instance {name}", wait=wait, timeout=timeout)

    def state(self, name: str) -> InstanceState:
        data = self._c.get(_path(name) + "/state", what=f"read state of {name}")
        return InstanceState.from_api(data)

    def update(
        self,
        name: str,
        *,
        config: dict[str, str | None] | None = None,
        devices: dict[str, dict[str, str] | None] | None = None,
        profiles: list[str] | None = None,
        retries: int = 3,
    ) -> Instance:
        """Change config keys and devices; a value of None removes the key/device.

        Read-modify-write with the ETag, retried when someone else changed the
        instance in between. Live where the runtime allows (most keys and devices)."""
        for attempt in range(retries):
            inst = self.get(name)
            new_config = dict(inst.config)
            for key, cval in (config or {}).items():
                if cval is None:
                    new_config.pop(key, None)
                else:
                    new_config[key] = cval
            new_devices = {k: dict(v) for k, v in inst.devices.items()}
            for dev, dval in (devices or {}).items():
                if dval is None:
                    new_devices.pop(dev, None)
                else:
                    new_devices[dev] = dict(dval)
            body = {
                "config": new_config,
                "devices": new_devices,
                "profiles": list(profiles) if profiles is not None else list(inst.profiles),
                "description": inst.description,
            }
            headers = {"If-Match": inst.etag} if inst.etag else None
            response = self._c.raw("PUT", _path(name), json=body, headers=headers)
            if response.status_code == 412 and attempt + 1 < retries:
                continue
            result = raise_for_response(response, f"update instance {name}")
            if result.get("type") == "async":
                self._c.wait(str(result["metadata"]["id"]), what=f"update instance {name}")
            return self.get(name)
        raise RuntimeConflict(f"update instance {name}: changed by someone else {retries} times in a row")

    def add_device(self, name: str, device: str, spec: dict[str, str]) -> Instance:
        return self.update(name, devices={device: spec})

    def remove_device(self, name: str, device: str) -> Instance:
        return self.update(name, devices={device: None})

    def rename(self, name: str, new_name: str) -> Any:
        return self._c.call("POST", _path(name), what=f"rename instance {name}", json={"name": new_name})

    # Exec and files ----------------------------------------------------------

    def exec(
        self,
        name: str,
        command: list[str],
        *,
        environment: dict[str, str] | None = None,
        user: int | None = None,
        group: int | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run a command (an argument list, never a shell string) and collect its output.

        Uses ``record-output``; waits for the command to end. Raises
        OperationTimeout after ``timeout`` seconds."""
        if not command or not all(isinstance(a, str) for a in command):
            raise ValueError("command must be a non-empty list of strings")
        body: dict[str, Any] = {
            "command": command,
            "environment": environment or {},
            "wait-for-websocket": False,
            "interactive": False,
            "record-output": True,
        }
        if user is not None:
            body["user"] = user
        if group is not None:
            body["group"] = group
        if cwd is not None:
            body["cwd"] = cwd
        what = f"exec {command[0]} in {name}"
        op = self._c.call("POST", _path(name) + "/exec", what=what, json=body, timeout=timeout)
        meta = (op or {}).get("metadata") or {}
        outputs = meta.get("output") or {}
        stdout = self._read_log(outputs.get("1"))
        stderr = self._read_log(outputs.get("2"))
        return ExecResult(exit_code=int(meta.get("return", -1)), stdout=stdout, stderr=stderr)

    def _read_log(self, url: str | None) -> str:
        if not url:
            return ""
        response = self._c.raw("GET", url, project=False)
        text = response.text if response.is_success else ""
        # Exec logs pile up in the instance otherwise.
        self._c.raw("DELETE", url, project=False)
        return text

    def push_file(
        self,
        name: str,
        path: str,
        data: bytes | BinaryIO | Iterable[bytes],
        *,
        uid: int = 0,
        gid: int = 0,
        mode: int = 0o644,
        timeout: float | None = None,
    ) -> None:
        """Write a file inside the instance (files API; parent folders must exist). ``data`` may be bytes, an
        open file or an iterator of chunks: those are streamed, never read whole into memory."""
        p = self._c.header_prefix
        headers = {
            f"{p}uid": str(uid),
            f"{p}gid": str(gid),
            f"{p}mode": f"{mode:04o}",
            f"{p}type": "file",
            f"{p}write": "overwrite",
            "Content-Type": "application/octet-stream",
        }
        self._c.request(
            "POST",
            _path(name) + "/files",
            what=f"write {path} in {name}",
            params={"path": path},
            content=data,
            headers=headers,
            timeout=timeout,
        )

    def make_dir(self, name: str, path: str, *, uid: int = 0, gid: int = 0, mode: int = 0o755) -> None:
        p = self._c.header_prefix
        headers = {
            f"{p}uid": str(uid),
            f"{p}gid": str(gid),
            f"{p}mode": f"{mode:04o}",
            f"{p}type": "directory",
        }
        self._c.request(
            "POST",
            _path(name) + "/files",
            what=f"create {path} in {name}",
            params={"path": path},
            headers=headers,
        )

    def pull_file(self, name: str, path: str) -> bytes:
        """Read a file from inside the instance. Raises RuntimeNotFound when it is missing."""
        response = self._c.raw("GET", _path(name) + "/files", params={"path": path})
        if response.is_success and response.headers.get("content-type", "").startswith("application/json"):
            body = raise_for_response(response, f"read {path} in {name}")
            raise RuntimeError_(f"read {path} in {name}: it is a {body.get('metadata') and 'directory'}")
        if not response.is_success:
            raise_for_response(response, f"read {path} in {name}")
        return response.content

    @contextmanager
    def open_file(self, name: str, path: str, *, timeout: float | None = None) -> Iterator[httpx.Response]:
        """Read a file from inside the instance as a stream: yields the response with its body unread
        (``iter_bytes``). Raises RuntimeNotFound when it is missing, RuntimeError_ for a folder."""
        with self._c.stream(
            "GET",
            _path(name) + "/files",
            what=f"read {path} in {name}",
            params={"path": path},
            timeout=timeout,
        ) as response:
            kind = response.headers.get(f"{self._c.header_prefix}type", "file")
            if kind != "file" or response.headers.get("content-type", "").startswith("application/json"):
                raise RuntimeError_(f"read {path} in {name}: it is a {kind}, not a file")
            yield response

    def delete_file(self, name: str, path: str) -> None:
        self._c.request(
            "DELETE", _path(name) + "/files", what=f"delete {path} in {name}", params={"path": path}
        )

    # Snapshots -----------------------------------------------------------------

    def snapshots(self, name: str) -> list[dict[str, Any]]:
        data = self._c.get(
            _path(name) + "/snapshots", what=f"list snapshots of {name}", params={"recursion": 1}
        )
        return list(data or [])

    def create_snapshot(self, name: str, snapshot: str, *, wait: bool = True) -> Any:
        return self._c.call(
            "POST", _path(name) + "/snapshots", what=f"snapshot {name}", json={"name": snapshot}, wait=wait
        )

    def restore_snapshot(self, name: str, snapshot: str) -> Instance:
        inst = self.get(name)
        body = {
            "restore": snapshot,
            "config": inst.config,
            "devices": inst.devices,
            "profiles": list(inst.profiles),
        }
        self._c.call("PUT", _path(name), what=f"restore {name} to {snapshot}", json=body)
        return self.get(name)

    def delete_snapshot(self, name: str, snapshot: str) -> Any:
        return self._c.call(
            "DELETE",
            _path(name) + f"/snapshots/{quote(snapshot, safe='')}",
            what=f"delete snapshot {snapshot}",
        )
