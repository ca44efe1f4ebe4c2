"""A member as stored: the data classes, loading the row, and the container the row describes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from labgpu.domain.container import ContainerSpec, PortSpec, ShareSpec
from labgpu.domain.members import GpuRequest, PublicKey, parse_gpu_request
from labgpu.errors import LabgpuError, NotFound
from labgpu.runtime.client import RuntimeClient
from labgpu.services.context import Services
from labgpu.services.hosts import services_for
from labgpu.store.models import Member, Share


class ProvisionError(LabgpuError):
    """A provisioning step failed; the member stays in 'provisioning' and can be resumed."""

    reason = "provision-failed"


@dataclass(frozen=True)
class ConnectionSheet:
    """What a member needs to connect, shown once after provisioning."""

    name: str
    container: str
    host: str
    address: str
    user: str
    state: str
    ports: dict[str, int]
    home: str
    container_home: str
    initial_password: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def ssh_port(self) -> int:
        return self.ports["ssh"]

    def ssh_command(self) -> str:
        return f"ssh -p {self.ssh_port} {self.user}@{self.address}"

    def ssh_config(self) -> str:
        return (
            f"Host labgpu-{self.name}\n"
            f"    HostName {self.address}\n"
            f"    Port {self.ssh_port}\n"
            f"    User {self.user}\n"
        )

    def rdp_file(self) -> str | None:
        if "rdp" not in self.ports:
            return None
        return f"full address:s:{self.address}:{self.ports['rdp']}\r\nusername:s:{self.user}\r\nprompt for credentials:i:1\r\n"

    def as_dict(self, *, with_password: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "container": self.container,
            "host": self.host,
            "state": self.state,
            "ssh": {
                "host": self.address,
                "port": self.ssh_port,
                "user": self.user,
                "command": self.ssh_command(),
            },
            "ports": self.ports,
            "home": self.home,
            "container_home": self.container_home,
            "ssh_config": self.ssh_config(),
        }
        if self.rdp_file():
            out["rdp_file"] = self.rdp_file()
        if with_password:
            out["initial_password"] = self.initial_password
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class MemberRequest:
    """A validated request to add a member (nothing touched yet)."""

    name: str
    template: str
    cpu: int | None
    memory_bytes: int | None
    disk_bytes: int | None
    gpus: GpuRequest
    shares: tuple[str, ...]
    keys: tuple[PublicKey, ...]
    purposes: tuple[str, ...]
    email: str | None
    host: str | None = None  # the admin's choice of host; None: placement chooses
    gpus_given: bool = True  # False: ``gpus`` is default_gpus, which a host in assigned/booked mode overrides


@dataclass
class MemberInfo:
    """A member with their container's live state, for list/show."""

    name: str
    email: str | None
    role: str
    state: str
    host: str | None
    container: str | None
    template: str | None
    uid: int | None
    cpu: int | None
    memory_bytes: int | None
    disk_bytes: int | None
    gpus: str
    ports: dict[str, int]
    no_gpu: bool
    address: str | None
    shares: list[str]
    keys: list[str]
    home: str
    status: str = "unknown"  # the daemon's view: Running, Stopped, missing, unreachable
    ipv4: list[str] = field(default_factory=list)
    memory_usage: int = 0
    processes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def host_gpus(runtime: RuntimeClient) -> dict[int, str]:
    """The host's NVIDIA GPUs as index -> PCI address, in PCI order (as nvidia-smi numbers them)."""
    try:
        cards = (runtime.resources().get("gpu") or {}).get("cards") or []
    except LabgpuError:
        return {}
    addresses = sorted(
        str(c.get("pci_address")) for c in cards if c.get("driver") == "nvidia" and c.get("pci_address")
    )
    return dict(enumerate(addresses))


def member_services(svc: Services, name: str) -> Services:
    """``svc`` talking to the daemon of the host ``name``'s container lives on. Raises NotFound."""
    with svc.session() as session:
        return services_for(svc, load_member(session, name).host)


# The row and the container it describes ----------------------------------------------------------


def load_member(session: Session, name: str) -> Member:
    member = session.scalars(
        select(Member)
        .where(Member.name == name)
        .options(
            selectinload(Member.port_maps),
            selectinload(Member.ssh_keys),
            selectinload(Member.shares),
            selectinload(Member.host),
        )
    ).first()
    if member is None:
        raise NotFound(f"no member named {name}")
    return member


def home_dir(svc: Services, name: str) -> Path:
    return svc.settings.home_base / name


def container_home(svc: Services, name: str) -> str:
    return svc.settings.container_home.format(name=name)


def container_spec(
    svc: Services, member: Member, *, gpus_on_host: dict[int, str] | None = None
) -> ContainerSpec:
    """The container ``member`` should have, from the store and the settings."""
    if member.uid is None or member.container is None:
        raise ProvisionError(f"member {member.name} has no uid or container name")
    # No-GPU mode takes every GPU device away and keeps the member's choice for the way back.
    gpus = (
        GpuRequest("none")
        if member.no_gpu
        else parse_gpu_request(member.gpu_spec or svc.settings.default_gpus)
    )
    if gpus_on_host is None:
        # Only GPU devices need the host's GPUs (a request to the daemon's hardware inventory).
        gpus_on_host = host_gpus(svc.runtime) if gpus.mode != "none" else {}
    return ContainerSpec(
        name=member.container,
        owner=member.name,
        template=member.template or svc.settings.default_template,
        profile=svc.settings.profile_name,
        host_uid=member.uid,
        home_source=str(home_dir(svc, member.name)),
        home_path=container_home(svc, member.name),
        cpu=member.cpu_limit,
        memory_bytes=member.memory_limit_bytes,
        disk_bytes=member.disk_size_bytes,
        pool=svc.settings.storage_pool,
        ports=tuple(
            PortSpec(str(p.purpose), p.listen_address, p.host_port, p.container_port)
            for p in sorted(member.port_maps, key=lambda p: p.purpose)
        ),
        shares=tuple(
            ShareSpec(s.name, s.source, s.path, s.readonly)
            for s in sorted(member.shares, key=lambda s: s.name)
        ),
        gpus=gpus,
        host_gpus=gpus_on_host,
        spec_version=member.spec_version,
    )


def allowed_roots(svc: Services, session: Session) -> list[str]:
    """Host folders a member container may mount: the homes and the shares' sources."""
    return [str(svc.settings.home_base), *session.scalars(select(Share.source))]
