"""Where a member's container lives: free ports on its host, and a host for a member left without one."""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labgpu.domain.container import CONTAINER_PORTS
from labgpu.domain.members import allocate_ports, parse_gpu_request
from labgpu.errors import Conflict
from labgpu.services.context import Services
from labgpu.services.hosts import place
from labgpu.services.members._records import load_member
from labgpu.store.models import AuditEvent, Host, PortMap, PortPurpose

_ALLOCATION_RETRIES = 5


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


def place_unplaced(svc: Services, name: str) -> str | None:
    """Give a member without a host (its host was removed with --force) a host chosen by placement and
    ports there (SSH, and the RDP/VNC it had). Returns the placement note, or None when it has a host.
    Raises what placement raises (Exhausted when no host can take it)."""
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
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.action == "host.rm").order_by(AuditEvent.id.desc()).limit(50)
    )
    for event in events:
        had = ((event.detail or {}).get("unplaced_members") or {}).get(name)
        if isinstance(had, list):
            return [p for p in had if p in ("rdp", "vnc")]
    return []
