"""Members and their containers: add (provision), list, show, start/stop, passwords, keys.

``add_member`` writes the desired state in one transaction (member row, uid,
ports, keys, shares) and then :func:`provision` brings the daemon to it in
steps that are each safe to repeat. A crash at any point is repaired by running
``member add`` again or ``reconcile``: the row says what should exist, and each
step checks what does before acting.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import signal
import socket
import string
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from labgpu.domain.container import (
    CONTAINER_PORTS,
    ContainerSpec,
    PortSpec,
    ShareSpec,
    check_safe,
    missing_gpus,
)
from labgpu.domain.members import (
    GpuRequest,
    PublicKey,
    allocate_ports,
    allocate_uid,
    parse_gpu_request,
    parse_public_key,
    parse_size,
    validate_cpu,
    validate_member_name,
)
from labgpu.errors import N_, BadInput, Conflict, LabgpuError, NotFound
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeBadRequest, RuntimeConflict, RuntimeError_, RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.hosts import local_host, public_address, runtime_for, services_for
from labgpu.store.db import violated_constraint
from labgpu.store.models import Host, Member, MemberState, PortMap, PortPurpose, Share, SshKey

log = logging.getLogger(__name__)
PASSWORD_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "lIO0o1")
PASSWORD_LENGTH = 16
SSH_READY_TIMEOUT = 120.0
HALTED_CHECK_EVERY_S = 2.0  # how often wait_for_ssh asks the daemon whether the container still runs
_ALLOCATION_RETRIES = 5


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


# Validation ---------------------------------------------------------------------------------------


def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def read_keys(texts: Sequence[str]) -> tuple[PublicKey, ...]:
    """Parse public keys given as file contents (one or more lines each; comments and blanks skipped)."""
    keys: dict[str, PublicKey] = {}
    for text in texts:
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key = parse_public_key(line)
                keys.setdefault(key.fingerprint, key)
    return tuple(keys.values())


def validate_request(
    svc: Services,
    *,
    name: str,
    template: str | None = None,
    cpu: int | None = None,
    memory: str | None = None,
    disk: str | None = None,
    gpus: str | None = None,
    shares: Sequence[str] = (),
    ssh_keys: Sequence[str] = (),
    rdp: bool = False,
    vnc: bool = False,
    email: str | None = None,
    host: str | None = None,
) -> MemberRequest:
    """Check everything about a new member before anything is touched. Raises BadInput."""
    validate_member_name(name)
    if host is not None:
        from labgpu.services.hosts import validate_host_name

        validate_host_name(host)
    if email is not None and ("@" not in email or len(email) > 254 or any(c.isspace() for c in email)):
        raise BadInput(f"invalid e-mail address {email!r}")
    if template and (len(template) > 255 or not template.isprintable() or any(c.isspace() for c in template)):
        raise BadInput(
            f"invalid template {template[:60]!r}: an image alias has no spaces or control characters"
        )
    purposes = ("ssh",) + (("rdp",) if rdp else ()) + (("vnc",) if vnc else ())
    return MemberRequest(
        name=name,
        template=template or svc.settings.default_template,
        cpu=validate_cpu(cpu) if cpu is not None else None,
        memory_bytes=parse_size(memory, what="memory limit") if memory else None,
        disk_bytes=parse_size(disk, what="disk size") if disk else None,
        gpus=parse_gpu_request(gpus or svc.settings.default_gpus),
        shares=tuple(dict.fromkeys(shares)),
        keys=read_keys(ssh_keys),
        purposes=purposes,
        email=email,
        host=host,
        gpus_given=bool(gpus and gpus.strip()),
    )


def gpus_for_host(request: MemberRequest, host: Host) -> tuple[MemberRequest, str | None]:
    """The request with the GPUs a new member gets on ``host``, and a note when that is not what was asked.

    Without an explicit choice a member gets ``default_gpus`` (usually all), except on a host whose GPUs
    are assigned or booked: there the default would hand every GPU to the new member behind the admin's
    assignments and everyone's bookings, so the member starts with none."""
    if request.gpus_given or host.gpu_mode not in ("assigned", "booked") or request.gpus.mode == "none":
        return request, None
    how = "labgpu gpu assign" if host.gpu_mode == "assigned" else "labgpu gpu book"
    note = f"GPUs: none for now ({host.name} shares its GPUs in {host.gpu_mode} mode: {how})"
    return replace(request, gpus=parse_gpu_request("none")), note


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


# Add ----------------------------------------------------------------------------------------------


def add_member(svc: Services, request: MemberRequest, *, wait_ssh: bool = True) -> ConnectionSheet:
    """Add a member and provision their container; return the connection sheet (with the password).

    The container goes to ``request.host``, or to the host placement chooses (the sheet's notes say
    which and why). A member left half-made by a crash (state provisioning) is resumed when
    added again. Raises BadInput / Conflict before touching anything when the
    request is wrong, ProvisionError (member kept, resumable) when a step fails."""
    from labgpu.services.hosts import place

    with svc.session() as session:
        existing = session.scalars(select(Member).where(Member.name == request.name)).first()
        if existing is not None and existing.state != MemberState.PROVISIONING:
            raise Conflict(f"member {request.name} already exists")
    notes: tuple[str, ...] = ()
    if existing is None:
        placement = place(
            svc,
            gpus=request.gpus,
            cpu=request.cpu,
            memory_bytes=request.memory_bytes,
            template=request.template,
            host=request.host,
            member=request.name,
        )
        request, gpu_note = gpus_for_host(request, placement.host)
        _check_request_against_world(services_for(svc, placement.host), request)
        _write_desired_state(svc, request, host_id=placement.host.id)
        checkpoint("desired-state")
        notes = tuple(n for n in (placement.note, gpu_note) if n)
    sheet = provision(svc, request.name, wait_ssh=wait_ssh)
    return replace(sheet, notes=(*sheet.notes, *notes, *gateway_changed(svc, request.name)))


def gateway_changed(svc: Services, name: str) -> list[str]:
    """Keep the login gateway (when enabled) in step with a member who was added, removed or whose keys
    changed: their host account, key file and the map. Never raises; returns notes to show (and logs
    them: the portal shows none)."""
    from labgpu.services import hosts as hosts_svc

    notes = hosts_svc.on_member_changed(svc, name)
    for note in notes:
        if "password" not in note:  # a gateway password is shown once, never logged
            log.info("%s", note)
    return notes


def _check_request_against_world(svc: Services, request: MemberRequest) -> None:
    runtime = svc.runtime
    if runtime.images.resolve_alias(request.template) is None:
        raise BadInput(
            f"unknown template {request.template!r}",
            hint="publish one with `labgpu template bootstrap`, or list them with `lxc image list`",
        )
    if svc.runtime.profiles.find(svc.settings.profile_name) is None:
        raise BadInput(
            f"the {svc.settings.profile_name} profile is missing", hint="run `labgpu host init` first"
        )
    try:
        inst = runtime.instances.get(request.name)
    except RuntimeNotFound:
        inst = None
    if inst is not None and inst.label("owner") != request.name:
        raise Conflict(f"an instance named {request.name} already exists on the host and is not labgpu's")
    missing = missing_gpus(request.gpus, host_gpus(runtime))
    if missing:
        raise BadInput(f"this host has no GPU {', '.join(map(str, missing))}")
    with svc.session() as session:
        found = {
            s.name: s.all_members
            for s in session.scalars(select(Share).where(Share.name.in_(request.shares)))
        }
    unknown = [s for s in request.shares if s not in found]
    if unknown:
        raise BadInput(f"unknown share(s): {', '.join(unknown)}", hint="list them with `labgpu share list`")
    everyone = [s for s in request.shares if found[s]]
    if everyone:
        raise BadInput(
            f"share(s) {', '.join(everyone)} are already mounted for every member; leave out --share"
        )


def listened_here(address: str, port: int) -> bool:
    """Whether some program on this machine already listens on address:port (TCP).

    Binds as a proxy device would (SO_REUSEADDR, so connections lingering in TIME_WAIT do not count)
    and lets go at once. An address this machine does not have, or a port this user may not bind,
    tells nothing: False."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address or "0.0.0.0", port))  # noqa: S104 - a probe: closed at once
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def new_port_maps(session: Session, settings: Any, host_id: int, purposes: Sequence[str]) -> list[PortMap]:
    """Port maps for ``purposes`` on the lowest free ports of ``host_id`` (settings.listen_address).

    Not added to any member; a concurrent allocation of the same port fails on the store's constraint.
    On the local daemon's host, a port some other program already listens on is skipped (the proxy
    device could not listen there and the container would not start)."""
    used = session.scalars(
        select(PortMap.host_port).where(
            PortMap.host_id == host_id, PortMap.listen_address == settings.listen_address
        )
    )
    host = session.get(Host, host_id)
    local = host is not None and host.url is None
    address = settings.listen_address
    ports = allocate_ports(
        used,
        start=settings.port_range_start,
        end=settings.port_range_end,
        count=len(purposes),
        available=(lambda port: not listened_here(address, port)) if local else None,
    )
    return [
        PortMap(
            host_id=host_id,
            listen_address=settings.listen_address,
            host_port=port,
            container_port=CONTAINER_PORTS[purpose],
            purpose=PortPurpose(purpose),
        )
        for purpose, port in zip(purposes, ports, strict=True)
    ]


def _write_desired_state(svc: Services, request: MemberRequest, *, host_id: int | None = None) -> None:
    """One transaction: member row, uid, ports, keys, shares. Retried when a
    concurrent add took the same uid or port (the constraints catch it)."""
    settings = svc.settings
    for attempt in range(_ALLOCATION_RETRIES):
        try:
            with svc.session() as session:
                host = session.get(Host, host_id) if host_id is not None else None
                if host is None:
                    host = local_host(session, svc.runtime)
                used_uids = session.scalars(select(Member.uid).where(Member.uid.is_not(None)))
                uid = allocate_uid(
                    [u for u in used_uids if u is not None], base=settings.uid_base, count=settings.uid_count
                )
                member = Member(
                    name=request.name,
                    email=request.email,
                    uid=uid,
                    host_id=host.id,
                    container=request.name,
                    state=MemberState.PROVISIONING,
                    template=request.template,
                    cpu_limit=request.cpu,
                    memory_limit_bytes=request.memory_bytes,
                    disk_size_bytes=request.disk_bytes,
                    gpu_spec=str(request.gpus),
                )
                session.add(member)
                port_maps = new_port_maps(session, settings, host.id, request.purposes)
                member.port_maps.extend(port_maps)
                ports = [pm.host_port for pm in port_maps]
                for key in request.keys:
                    member.ssh_keys.append(
                        SshKey(public_key=key.line, fingerprint=key.fingerprint, comment=key.comment or None)
                    )
                if request.shares:
                    member.shares.extend(session.scalars(select(Share).where(Share.name.in_(request.shares))))
                session.flush()
                svc.audit(
                    session,
                    "member.add",
                    request.name,
                    host=host.name,
                    uid=uid,
                    ports={p: port for p, port in zip(request.purposes, ports, strict=True)},
                    template=request.template,
                    gpus=str(request.gpus),
                )
            return
        except IntegrityError as exc:
            constraint = violated_constraint(exc) or ""
            if "name" in constraint and "member" in constraint:
                raise Conflict(f"member {request.name} already exists") from None
            if attempt + 1 == _ALLOCATION_RETRIES:
                raise Conflict(f"could not allocate a uid and ports for {request.name}; try again") from exc


def place_unplaced(svc: Services, name: str) -> str | None:
    """Give a member without a host (its host was removed with --force) a host chosen by placement and
    ports there (SSH, and the RDP/VNC it had). Returns the placement note, or None when it has a host.
    Raises what placement raises (Exhausted when no host can take it)."""
    from labgpu.services.hosts import place

    with svc.session() as session:
        member = load_member(session, name)
        if member.host_id is not None or member.uid is None:
            return None
        request = parse_gpu_request(member.gpu_spec or svc.settings.default_gpus)
        cpu, memory, template = member.cpu_limit, member.memory_limit_bytes, member.template
        purposes = ["ssh", *_purposes_before_unplacing(session, name)]
    placement = place(
        svc,
        gpus=request,
        cpu=cpu,
        memory_bytes=memory,
        template=template or svc.settings.default_template,
        member=name,
    )
    for attempt in range(_ALLOCATION_RETRIES):
        try:
            with svc.session() as session:
                member = load_member(session, name)
                member.host_id = placement.host.id
                member.port_maps.extend(new_port_maps(session, svc.settings, placement.host.id, purposes))
                session.flush()
                svc.audit(session, "member.placed", name, host=placement.host.name, reason=placement.note)
            return placement.note
        except IntegrityError as exc:
            if attempt + 1 == _ALLOCATION_RETRIES:
                raise Conflict(f"could not allocate ports for {name}; try again") from exc
    return None


def _purposes_before_unplacing(session: Session, name: str) -> list[str]:
    """The RDP/VNC ports a member had before `host rm --force` took them (recorded in its audit)."""
    from labgpu.store.models import AuditEvent

    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "host.rm").order_by(AuditEvent.id.desc()).limit(50)
    )
    for event in events:
        had = ((event.detail or {}).get("unplaced_members") or {}).get(name)
        if isinstance(had, list):
            return [p for p in had if p in ("rdp", "vnc")]
    return []


def member_services(svc: Services, name: str) -> Services:
    """``svc`` talking to the daemon of the host ``name``'s container lives on. Raises NotFound."""
    with svc.session() as session:
        return services_for(svc, load_member(session, name).host)


# Provisioning steps (each safe to repeat) ---------------------------------------------------------


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
        gpus=parse_gpu_request(member.gpu_spec or svc.settings.default_gpus),
        host_gpus=gpus_on_host if gpus_on_host is not None else host_gpus(svc.runtime),
        spec_version=member.spec_version,
    )


def allowed_roots(svc: Services, session: Session) -> list[str]:
    """Host folders a member container may mount: the homes and the shares' sources."""
    return [str(svc.settings.home_base), *session.scalars(select(Share.source))]


def ensure_home(svc: Services, name: str, uid: int) -> Path:
    """Create the member's host home folder, owned by their uid (mode 0700). Never touches an existing one."""
    base = svc.settings.home_base
    base.mkdir(parents=True, exist_ok=True)
    path = home_dir(svc, name)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return path
    os.chown(path, uid, uid)
    path.chmod(0o700)
    return path


def ensure_container(svc: Services, spec: ContainerSpec, roots: list[str]) -> bool:
    """Create the container in ONE request unless it exists. Returns True when created.

    Raises Conflict when an instance of that name exists and is not this member's."""
    runtime = svc.runtime
    try:
        inst = runtime.instances.get(spec.name)
    except RuntimeNotFound:
        inst = None
    if inst is not None:
        if inst.label("owner") != spec.owner:
            raise Conflict(f"an instance named {spec.name} exists and is not {spec.owner}'s")
        return False
    config, devices = spec.config(), spec.devices()
    check_safe(config, devices, allowed_roots=roots)
    runtime.instances.create(
        spec.name,
        image=spec.template,
        config=config,
        devices=devices,
        profiles=[spec.profile],
        description=f"labgpu container of {spec.owner}",
    )
    return True


def ensure_running(runtime: RuntimeClient, name: str) -> bool:
    """Start the container unless it runs. Returns True when it was started.

    The daemon may start it in the meantime (its own boot.autostart after a daemon restart, or a member's
    click): a start refused because it already runs is not an error."""
    if runtime.instances.state(name).status == "Running":
        return False
    try:
        runtime.instances.start(name)
    except (RuntimeBadRequest, RuntimeConflict, RuntimeError_):
        if runtime.instances.state(name).status == "Running":
            return False
        raise
    return True


def probe_address(listen_address: str) -> str:
    return "127.0.0.1" if listen_address in ("0.0.0.0", "", "::") else listen_address  # noqa: S104 - a comparison, binds nothing


def ssh_probe_address(svc: Services, host: Host | None, listen_address: str) -> str | None:
    """Where labgpu can knock on a member's SSH port: this machine's loopback for the local daemon; the
    host's public address for another host listening on every address; None when the proxy listens
    on another host's loopback (nothing to reach from here)."""
    if host is None or host.url is None:
        return probe_address(listen_address)
    if listen_address in ("0.0.0.0", "", "::"):  # noqa: S104 - a comparison, binds nothing
        return public_address(host, svc.settings)
    if listen_address.startswith("127.") or listen_address in ("::1", "localhost"):
        return None
    return listen_address


def container_halted(runtime: RuntimeClient, name: str) -> Callable[[], str | None]:
    """A check for :func:`wait_for_ssh`: the container's status once it is no longer running, else None.

    A daemon that does not answer for a moment is not a verdict (None: keep waiting)."""

    def check() -> str | None:
        try:
            status = runtime.instances.state(name).status
        except LabgpuError:
            return None
        return None if status == "Running" else status or "gone"

    return check


def wait_for_ssh(
    address: str,
    port: int,
    *,
    timeout: float = SSH_READY_TIMEOUT,
    halted: Callable[[], str | None] | None = None,
    container: str = "",
) -> None:
    """Wait until an SSH server answers with its banner at address:port (through the proxy device).

    With ``halted`` (see :func:`container_halted`), a container that stops meanwhile (its init died at
    boot, it ran out of memory) fails the wait at once instead of after ``timeout``."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + HALTED_CHECK_EVERY_S
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=3) as sock:
                sock.settimeout(3)
                banner = sock.recv(64)
            if banner.startswith(b"SSH-"):
                return
            last = "connection closed before the SSH banner"
        except OSError as exc:
            last = exc.strerror or str(exc)
        if halted is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + HALTED_CHECK_EVERY_S
            status = halted()
            if status is not None:
                raise ProvisionError(
                    f"container {container} stopped while labgpu waited for its sshd (status: {status})",
                    hint=f"see why with `lxc info {container} --show-log` (or `incus info {container} "
                    "--show-log`); `labgpu doctor` checks the kernel limits that make containers die at boot",
                )
        time.sleep(0.3)
    raise ProvisionError(f"sshd did not answer on {address}:{port} within {timeout:g}s ({last})")


def wait_ssh_on(svc: Services, host: Host | None, listen_address: str, port: int, container: str) -> None:
    """Wait until ``container``'s sshd answers through its SSH port map on ``host`` (``svc`` talks to that
    host's daemon), from wherever labgpu can knock; nothing to wait for when the port listens on another
    host's loopback. Fails at once when the container stops meanwhile. Raises ProvisionError."""
    probe = ssh_probe_address(svc, host, listen_address)
    if probe is None:
        return
    wait_for_ssh(
        probe,
        port,
        timeout=svc.settings.ssh_ready_timeout,
        halted=container_halted(svc.runtime, container),
        container=container,
    )


def wait_member_ssh(svc: Services, name: str) -> None:
    """:func:`wait_ssh_on` for a member, from the store. Raises NotFound, ProvisionError."""
    with svc.session() as session:
        member = load_member(session, name)
        host = member.host
        member_svc = services_for(svc, host)
        ssh = next((pm for pm in member.port_maps if pm.purpose == PortPurpose.SSH), None)
        container = member.container or name
    if ssh is not None:
        wait_ssh_on(member_svc, host, ssh.listen_address, ssh.host_port, container)


def set_initial_password(svc: Services, container: str) -> str:
    """Set a random password for the container user, expired so that the first login must change it."""
    password = generate_password()
    user = svc.settings.container_user
    runtime = svc.runtime
    tmp = f"/root/.labgpu-passwd-{secrets.token_hex(4)}"
    runtime.instances.push_file(container, tmp, f"{user}:{password}\n".encode(), mode=0o600)
    # The script is a constant; the file name is passed as an argument, never spliced in.
    script = 'chpasswd < "$1"; rc=$?; rm -f "$1"; exit $rc'
    result = runtime.instances.exec(container, ["sh", "-c", script, "sh", tmp])
    if not result.ok:
        raise ProvisionError(f"setting the password in {container} failed: {result.stderr.strip()[:200]}")
    result = runtime.instances.exec(container, ["chage", "-d", "0", user])
    if not result.ok:
        raise ProvisionError(f"expiring the password in {container} failed: {result.stderr.strip()[:200]}")
    return password


def install_keys(svc: Services, container: str, keys: Sequence[str]) -> None:
    """Write the member's SSH keys to the container user's authorized_keys (replacing it)."""
    user = svc.settings.container_user
    runtime = svc.runtime
    ssh_dir = f"/home/{user}/.ssh"
    result = runtime.instances.exec(
        container, ["install", "-d", "-m", "700", "-o", user, "-g", user, ssh_dir]
    )
    if not result.ok:
        raise ProvisionError(f"creating {ssh_dir} in {container} failed: {result.stderr.strip()[:200]}")
    ids = runtime.instances.exec(container, ["id", "-u", user])
    uid = int(ids.stdout.strip() or 1000)
    text = "".join(k.strip() + "\n" for k in keys)
    runtime.instances.push_file(
        container, f"{ssh_dir}/authorized_keys", text.encode(), uid=uid, gid=uid, mode=0o600
    )


PROVISION_STEPS = ("desired-state", "home", "container", "running", "ssh", "password", "keys", "done")


def checkpoint(step: str) -> None:
    """Fault injection for the crash tests: ``LABGPU_FAULT_KILL_AFTER=<step>`` makes the process
    SIGKILL itself right after that step, as a power cut or an OOM kill would.
    ``LABGPU_FAULT_PAUSE_AFTER=<step>`` with ``LABGPU_FAULT_PAUSE_FILE=<path>`` makes it create that
    file after the step and wait (up to 10 minutes) until it is gone, so that a test can restart the
    daemon in the middle of the operation."""
    if os.environ.get("LABGPU_FAULT_KILL_AFTER") == step:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("LABGPU_FAULT_PAUSE_FILE")
    if pause and os.environ.get("LABGPU_FAULT_PAUSE_AFTER") == step:
        Path(pause).write_text(f"{os.getpid()} paused after {step}\n")
        deadline = time.monotonic() + 600
        while Path(pause).exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def provision(
    svc: Services, name: str, *, wait_ssh: bool = True, set_password: bool = True
) -> ConnectionSheet:
    """Bring the daemon to the member's desired state: home, container, running, sshd, credentials.

    The container is made on the member's host (a member without one, after `host rm --force`, is
    placed first). Each step checks before acting, so this is safe to run again after any crash.
    Waits for sshd (up to SSH_READY_TIMEOUT). Raises ProvisionError, Conflict or runtime errors."""
    from labgpu.services.members._homes import ensure_home_on

    place_unplaced(svc, name)
    with svc.session() as session:
        member = load_member(session, name)
        host = member.host
        svc = services_for(svc, host)  # from here on: the daemon of the member's host
        spec = container_spec(svc, member)
        roots = allowed_roots(svc, session)
        keys = [k.public_key for k in member.ssh_keys]
        host_name = host.name if host else ""
        address = public_address(host, svc.settings) if host else svc.settings.listen_address
    assert member.uid is not None and member.container is not None
    ensure_home_on(svc, host, name, member.uid)
    checkpoint("home")
    ensure_container(svc, spec, roots)
    checkpoint("container")
    ensure_running(svc.runtime, spec.name)
    checkpoint("running")
    ssh = next(p for p in spec.ports if p.purpose == "ssh")
    if wait_ssh:
        wait_ssh_on(svc, host, ssh.listen_address, ssh.host_port, spec.name)
    checkpoint("ssh")
    password = set_initial_password(svc, spec.name) if set_password else None
    checkpoint("password")
    install_keys(svc, spec.name, keys)
    checkpoint("keys")
    with svc.session() as session:
        row = load_member(session, name)
        if row.state == MemberState.PROVISIONING:
            row.state = MemberState.RUNNING
    checkpoint("done")
    return ConnectionSheet(
        name=name,
        container=spec.name,
        host=host_name,
        address=address,
        user=svc.settings.container_user,
        state="running",
        ports={p.purpose: p.host_port for p in spec.ports},
        home=str(home_dir(svc, name)),
        container_home=spec.home_path,
        initial_password=password,
    )


# Reading ------------------------------------------------------------------------------------------


def _info(svc: Services, member: Member) -> MemberInfo:
    return MemberInfo(
        name=member.name,
        email=member.email,
        role=str(member.role),
        state=str(member.state),
        host=member.host.name if member.host else None,
        container=member.container,
        template=member.template,
        uid=member.uid,
        cpu=member.cpu_limit,
        memory_bytes=member.memory_limit_bytes,
        disk_bytes=member.disk_size_bytes,
        gpus=member.gpu_spec or svc.settings.default_gpus,
        ports={str(p.purpose): p.host_port for p in member.port_maps},
        address=public_address(member.host, svc.settings) if member.host else None,
        shares=sorted(s.name for s in member.shares),
        keys=[k.fingerprint for k in member.ssh_keys],
        home=str(home_dir(svc, member.name)),
    )


def list_members(svc: Services, *, live: bool = True) -> list[MemberInfo]:
    """Every member, with their container's live state from ONE listing request."""
    with svc.session() as session:
        members = session.scalars(
            select(Member)
            .order_by(Member.name)
            .options(
                selectinload(Member.port_maps),
                selectinload(Member.ssh_keys),
                selectinload(Member.shares),
                selectinload(Member.host),
            )
        ).all()
        infos = [_info(svc, m) for m in members]
    if live and infos:
        hosts = {m.host_id: m.host for m in members}
        listings = _instances_by_host(svc, hosts)
        for member, info in zip(members, infos, strict=True):
            instances = listings.get(member.host_id)
            if instances is None:
                info.status = "unreachable"
                continue
            inst = instances.get(info.container or "")
            if inst is None:
                info.status = "missing"
                continue
            info.status = inst.status
            if inst.state is not None:
                info.ipv4 = list(inst.state.ipv4)
                info.memory_usage = inst.state.memory_usage
                info.processes = inst.state.processes
    return infos


def _instances_by_host(
    svc: Services, hosts: dict[int | None, Host | None]
) -> dict[int | None, dict[str, Any]]:
    """host id -> {name: Instance} with state, ONE listing per host; the local daemon for members
    without a host. Asked in parallel, each within host_timeout (the local one within the runtime's
    own timeout, as before); a host that fails is left out."""
    from labgpu.services.hosts import ask_all, on_member

    def job(host: Host | None) -> Any:
        def ask() -> dict[str, Any]:
            runtime = runtime_for(svc, host)
            found = on_member(runtime.instances.all(), runtime.target)
            return {i.name: i for i in found}

        return ask

    if set(hosts) <= {None} or all(h is None or h.url is None for h in hosts.values()):
        try:
            local = {i.name: i for i in svc.runtime.instances.all()}
        except LabgpuError:
            return {}
        return dict.fromkeys(hosts, local)
    answers = ask_all({key: job(host) for key, host in hosts.items()}, timeout=svc.settings.host_timeout)
    return {key: a.value for key, a in answers.items() if a.value is not None and a.error is None}


def get_member(svc: Services, name: str, *, live: bool = True) -> MemberInfo:
    """One member with their container's live state. Raises NotFound."""
    with svc.session() as session:
        member = load_member(session, name)
        info = _info(svc, member)
        runtime = runtime_for(svc, member.host)
    if live and info.container:
        try:
            state = runtime.instances.state(info.container)
            info.status = state.status
            info.ipv4 = list(state.ipv4)
            info.memory_usage = state.memory_usage
            info.processes = state.processes
        except RuntimeNotFound:
            info.status = "missing"
        except LabgpuError:
            info.status = "unreachable"
    return info


# Changing -----------------------------------------------------------------------------------------


# One power change at a time per member in this process. The desired state is written, then the daemon
# acts; two changes sent together (a stop and a start from two tabs) must reach the daemon in the order
# they reached the store, or the store says running while the daemon stopped (a lost update). Another
# process (the CLI beside the portal) is not serialized with this one: the reconciler repairs that drift.
_power_locks: dict[str, threading.Lock] = {}
_power_locks_guard = threading.Lock()


def _power_lock(name: str) -> threading.Lock:
    with _power_locks_guard:
        return _power_locks.setdefault(name, threading.Lock())


def set_power(svc: Services, name: str, action: str, *, force: bool = False) -> str:
    """start / stop / restart a member's container; records the desired state. Returns the new status.

    Waits for the daemon. Changes for the same member are made one at a time (in this process), so the
    desired state in the store is the one of the change the daemon saw last. Raises BadInput, NotFound,
    Conflict (the member is being provisioned or removed) and runtime errors."""
    if action not in ("start", "stop", "restart"):
        raise BadInput(f"unknown action {action!r}")
    with _power_lock(name):
        with svc.session() as session:
            member = load_member(session, name)
            if member.state in (MemberState.PROVISIONING, MemberState.REMOVING):
                raise Conflict(f"member {name} is {member.state}; run `labgpu reconcile` first")
            container = member.container or name
            member.state = MemberState.STOPPED if action == "stop" else MemberState.RUNNING
            svc.audit(session, f"member.{action}", name)
            runtime = runtime_for(svc, member.host)
        status = runtime.instances.state(container).status
        if action == "start" and status != "Running":
            runtime.instances.start(container)
        elif action == "stop" and status != "Stopped":
            runtime.instances.stop(container, force=force)
        elif action == "restart":
            if status == "Running":
                runtime.instances.restart(container, force=force)
            else:
                runtime.instances.start(container)
        return runtime.instances.state(container).status


def reset_password(svc: Services, name: str) -> str:
    """Give the member a new random initial password (to change at the next login). Returns it.
    Audited once the password is set (a refusal, or a daemon that fails, leaves no row claiming it was)."""
    with svc.session() as session:
        member = load_member(session, name)
        container = member.container or name
        host_svc = services_for(svc, member.host)
    if host_svc.runtime.instances.state(container).status != "Running":
        raise Conflict(f"{name}'s container is not running; start it first (labgpu member start {name})")
    password = set_initial_password(host_svc, container)
    with svc.session() as session:
        svc.audit(session, "member.passwd", name)
    return password


def add_keys(svc: Services, name: str, key_texts: Sequence[str]) -> list[str]:
    """Add SSH public keys (skipping ones already there) and install them. Returns the new fingerprints."""
    keys = read_keys(key_texts)
    if not keys:
        raise BadInput(N_("no public key given"))
    with svc.session() as session:
        member = load_member(session, name)
        have = {k.fingerprint for k in member.ssh_keys}
        added = []
        for key in keys:
            if key.fingerprint not in have:
                member.ssh_keys.append(
                    SshKey(public_key=key.line, fingerprint=key.fingerprint, comment=key.comment or None)
                )
                added.append(key.fingerprint)
        svc.audit(session, "member.key.add", name, fingerprints=added)
        all_keys = [k.public_key for k in member.ssh_keys]
        container = member.container or name
        host_svc = services_for(svc, member.host)
    _install_if_running(host_svc, container, all_keys)
    gateway_changed(svc, name)
    return added


def remove_key(svc: Services, name: str, fingerprint_or_comment: str) -> str:
    """Remove one SSH key by fingerprint (or unique comment). Returns its fingerprint. Raises NotFound."""
    with svc.session() as session:
        member = load_member(session, name)
        matches = [k for k in member.ssh_keys if fingerprint_or_comment in (k.fingerprint, k.comment)]
        if not matches:
            raise NotFound(f"{name} has no key {fingerprint_or_comment}")
        if len(matches) > 1:
            raise BadInput(f"{fingerprint_or_comment!r} matches several keys; give the fingerprint")
        member.ssh_keys.remove(matches[0])
        svc.audit(session, "member.key.rm", name, fingerprint=matches[0].fingerprint)
        all_keys = [k.public_key for k in member.ssh_keys if k is not matches[0]]
        container = member.container or name
        host_svc = services_for(svc, member.host)
    _install_if_running(host_svc, container, all_keys)
    gateway_changed(svc, name)
    return matches[0].fingerprint


def list_keys(svc: Services, name: str) -> list[dict[str, str]]:
    with svc.session() as session:
        member = load_member(session, name)
        return [
            {"fingerprint": k.fingerprint, "comment": k.comment or "", "key": k.public_key}
            for k in member.ssh_keys
        ]


def _install_if_running(svc: Services, container: str, keys: list[str]) -> None:
    # A stopped container gets its keys from the store at the next provision/reconcile.
    try:
        if svc.runtime.instances.state(container).status == "Running":
            install_keys(svc, container, keys)
    except RuntimeNotFound:
        pass
