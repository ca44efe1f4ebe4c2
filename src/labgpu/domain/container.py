"""The desired LXD/Incus config and devices of a member's container, as pure data.

Everything a member's container needs is computed here and sent in ONE create
request; the reconciler compares the same output with what the daemon has.
:func:`check_safe` is the last gate before anything reaches the daemon: no
privileged or nested container, no host folder outside the allowed roots.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from labgpu.domain.members import GpuRequest, format_size
from labgpu.errors import BadInput

LABEL_PREFIX = "user.labgpu."
CONTAINER_PORTS = {"ssh": 22, "rdp": 3389, "vnc": 5901}
# One raw.idmap line as labgpu writes it: one host id mapped to one container id.
_IDMAP_LINE = re.compile(r"^(uid|gid|both) ([0-9]{1,10}) ([0-9]{1,10})\Z")
# Host ids below this belong to the host's system accounts (root, daemons): never mapped into a container.
MIN_MAPPED_HOST_ID = 1000


@dataclass(frozen=True)
class PortSpec:
    purpose: str  # ssh, rdp, vnc
    listen_address: str
    host_port: int
    container_port: int

    @property
    def device_name(self) -> str:
        return f"labgpu-{self.purpose}"

    def device(self) -> dict[str, str]:
        return {
            "type": "proxy",
            "listen": f"tcp:{self.listen_address}:{self.host_port}",
            "connect": f"tcp:127.0.0.1:{self.container_port}",
            "bind": "host",
        }


@dataclass(frozen=True)
class ShareSpec:
    name: str
    source: str
    path: str
    readonly: bool = True

    @property
    def device_name(self) -> str:
        return f"share-{self.name}"

    def device(self) -> dict[str, str]:
        dev = {"type": "disk", "source": self.source, "path": self.path}
        if self.readonly:
            dev["readonly"] = "true"
        return dev


@dataclass(frozen=True)
class ContainerSpec:
    """What a member's container should look like."""

    name: str
    owner: str
    template: str
    profile: str
    host_uid: int
    home_source: str
    home_path: str
    container_uid: int = 1000
    cpu: int | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    pool: str = "default"
    ports: tuple[PortSpec, ...] = ()
    shares: tuple[ShareSpec, ...] = ()
    gpus: GpuRequest = field(default_factory=lambda: GpuRequest("none"))
    # index -> PCI address of the host's GPUs (empty on a host without GPUs)
    host_gpus: Mapping[int, str] = field(default_factory=dict)
    spec_version: int = 1

    def labels(self) -> dict[str, str]:
        return {
            f"{LABEL_PREFIX}owner": self.owner,
            f"{LABEL_PREFIX}template": self.template,
            f"{LABEL_PREFIX}spec-version": str(self.spec_version),
        }

    def config(self) -> dict[str, str]:
        cfg = {
            **self.labels(),
            "boot.autostart": "true",
            # Map the member's host uid/gid to the container user, so files in the
            # home belong to the member on both sides. Set before the first start.
            "raw.idmap": f"uid {self.host_uid} {self.container_uid}\ngid {self.host_uid} {self.container_uid}",
        }
        if self.cpu is not None:
            cfg["limits.cpu"] = str(self.cpu)
        if self.memory_bytes is not None:
            cfg["limits.memory"] = format_size(self.memory_bytes)
        return cfg

    def gpu_devices(self) -> dict[str, dict[str, str]]:
        if self.gpus.mode == "none" or not self.host_gpus:
            return {}
        if self.gpus.mode == "all":
            return {"labgpu-gpu": {"type": "gpu", "gputype": "physical"}}
        return {
            f"labgpu-gpu{i}": {"type": "gpu", "gputype": "physical", "pci": self.host_gpus[i]}
            for i in self.gpus.indexes
            if i in self.host_gpus
        }

    def devices(self) -> dict[str, dict[str, str]]:
        devs: dict[str, dict[str, str]] = {}
        if self.disk_bytes is not None:
            devs["root"] = {
                "type": "disk",
                "path": "/",
                "pool": self.pool,
                "size": format_size(self.disk_bytes),
            }
        devs["labgpu-home"] = {"type": "disk", "source": self.home_source, "path": self.home_path}
        for share in self.shares:
            devs[share.device_name] = share.device()
        for port in self.ports:
            devs[port.device_name] = port.device()
        devs.update(self.gpu_devices())
        return devs


def missing_gpus(request: GpuRequest, host_gpus: Mapping[int, str]) -> list[int]:
    """Requested GPU indexes this host does not have."""
    if request.mode != "indexes":
        return []
    return [i for i in request.indexes if i not in host_gpus]


def _inside(path: str, roots: Iterable[str]) -> bool:
    p = PurePosixPath(posixpath.normpath(path))
    return any(p == PurePosixPath(r) or PurePosixPath(r) in p.parents for r in roots)


def check_safe(
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
    *,
    allowed_roots: Iterable[str],
    app_socket_dir: str | None = None,
) -> None:
    """Refuse a container definition that would weaken isolation.

    Raises BadInput for: privileged or nested containers, raw LXC/AppArmor/seccomp/QEMU config, a
    raw.idmap that maps anything but single member ids (never a host id below 1000), host devices of
    the unix-char/unix-block kind, disk devices whose host source lies outside ``allowed_roots`` (the
    homes base and the shares), and proxy devices other than host TCP/UDP ports forwarded into the
    container. With ``app_socket_dir``, a proxy may also listen on a unix socket directly in that folder
    (the web apps' sockets, which only labgpu can open) and connect to a TCP port on the container's
    loopback."""
    roots = [posixpath.normpath(r) for r in allowed_roots]
    for key, value in config.items():
        if key == "security.privileged" and value.lower() in ("true", "1", "yes", "on"):
            raise BadInput("refused: labgpu never creates privileged containers")
        if key == "security.nesting" and value.lower() in ("true", "1", "yes", "on"):
            raise BadInput("refused: labgpu does not enable nesting in member containers")
        if key == "raw.idmap":
            _check_idmap(value)
        elif key.startswith("raw.") or key == "security.idmap.base":
            raise BadInput(f"refused: labgpu never sets {key}")
    for name, dev in devices.items():
        kind = dev.get("type")
        if kind in ("unix-char", "unix-block", "unix-hotplug", "usb", "pci", "infiniband"):
            raise BadInput(f"refused: device {name} of type {kind} gives host hardware to a member")
        if kind == "disk" and dev.get("path") != "/":
            source = dev.get("source", "")
            if not source.startswith("/") or ".." in PurePosixPath(source).parts:
                raise BadInput(f"refused: device {name} has a non-absolute host path {source!r}")
            if not _inside(source, roots):
                raise BadInput(f"refused: device {name} mounts {source}, outside the allowed host folders")
        if kind == "disk" and dev.get("path") == "/" and dev.get("source"):
            raise BadInput(f"refused: device {name} replaces the root filesystem with a host folder")
        if kind == "proxy":
            if dev.get("connect", "").startswith("unix:"):
                raise BadInput(f"refused: device {name} would expose a host socket")
            # bind=instance turns the proxy around: it listens in the container and connects from the
            # host, so the container would reach the host's own loopback services (the daemon, the agent).
            if dev.get("bind", "host") != "host":
                raise BadInput(f"refused: device {name} would let the container connect out from the host")
            if _app_socket(dev, app_socket_dir):
                continue
            for end in ("listen", "connect"):
                if not dev.get(end, "").startswith(("tcp:", "udp:")):
                    raise BadInput(f"refused: device {name} {end}s on something other than a TCP/UDP port")


def _app_socket(dev: Mapping[str, str], app_socket_dir: str | None) -> bool:
    """A web app's proxy: a unix socket directly in ``app_socket_dir`` (no '..'), mode 0600, to a loopback
    TCP port of the container. Raises BadInput for a unix listener anywhere else."""
    listen = dev.get("listen", "")
    if not listen.startswith("unix:"):
        return False
    path = listen[len("unix:") :]
    if (
        app_socket_dir is None
        or posixpath.dirname(path) != posixpath.normpath(app_socket_dir)
        or ".." in PurePosixPath(path).parts
        or dev.get("mode") != "0600"
        or not re.match(r"^tcp:127\.0\.0\.1:[0-9]{1,5}\Z", dev.get("connect", ""))
    ):
        raise BadInput("refused: a proxy that listens on a host socket outside labgpu's app socket folder")
    return True


def _check_idmap(value: str) -> None:
    """raw.idmap may only map single host ids of members (never root's or a system account's)."""
    for line in value.splitlines():
        match = _IDMAP_LINE.match(line)
        if match is None:
            raise BadInput(
                f"refused: raw.idmap line {line[:60]!r} is not 'uid|gid|both HOST_ID CONTAINER_ID'"
            )
        if int(match.group(2)) < MIN_MAPPED_HOST_ID:
            raise BadInput(
                f"refused: raw.idmap would map the host's system id {match.group(2)} into a container"
            )
