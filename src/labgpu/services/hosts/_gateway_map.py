"""The map the gateway helper reads: every member's container, ports, GPUs and bookings, and the notices.

The helper runs as root for a member who logged in over SSH and knows nothing of the store: this file
(root only, mode 0600) is all it reads. It is rewritten when members, bookings or notices change.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu.errors import LabgpuError
from labgpu.gateway import helper as helper_module
from labgpu.services.context import Services
from labgpu.services.hosts._gateway_paths import GatewayPaths, is_enabled, runtime_cli
from labgpu.services.hosts._records import public_address, recorded_local_host
from labgpu.store.models import Account, Booking, BookingStatus, Member, Notice, utcnow
from labgpu.system.accounts import account_uid
from labgpu.system.files import write_atomic


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def build_map(svc: Services, paths: GatewayPaths, *, now: datetime | None = None) -> dict[str, Any]:
    """Everything the helper needs, from the store: members (container, state, ports, GPUs, bookings),
    the active and coming notices, and how to reach the daemon."""
    settings = svc.settings
    now = now or utcnow()
    runtime_kind = svc.runtime.server().kind
    socket_dir = str(svc.runtime.endpoint.socket_path.parent) if svc.runtime.endpoint.socket_path else ""
    env_name = "INCUS_DIR" if runtime_kind == "incus" else "LXD_DIR"
    members: dict[str, Any] = {}
    with svc.session() as session:
        local = recorded_local_host(session)
        host_info = {
            "name": local.name if local else "",
            "address": public_address(local, settings) if local else settings.public_address or "",
        }
        rows = session.scalars(
            select(Member)
            .order_by(Member.name)
            .options(selectinload(Member.port_maps), selectinload(Member.host))
        ).all()
        disabled = {
            a.member_id for a in session.scalars(select(Account).where(Account.disabled_at.is_not(None)))
        }
        bookings: dict[int, list[dict[str, Any]]] = {}
        live = (BookingStatus.PENDING, BookingStatus.APPROVED, BookingStatus.ACTIVE)
        for b in session.scalars(
            select(Booking).where(Booking.status.in_(live), Booking.end_at > now).order_by(Booking.start_at)
        ):
            bookings.setdefault(b.member_id, []).append(
                {
                    "gpus": b.gpus,
                    "start_at": _iso(b.start_at),
                    "end_at": _iso(b.end_at),
                    "status": str(b.status),
                }
            )
        for m in rows:
            uid = account_uid(m.name)
            if uid is None:
                continue  # no gateway account (yet)
            elsewhere = None
            if m.host is not None and local is not None and m.host.id != local.id:
                elsewhere = public_address(m.host, settings)
            members[m.name] = {
                "uid": uid,
                "container": m.container,
                "state": str(m.state),
                "disabled": m.id in disabled,
                "elsewhere": elsewhere,
                "ports": {str(p.purpose): p.host_port for p in sorted(m.port_maps, key=lambda p: p.purpose)},
                "gpus": m.gpu_spec or settings.default_gpus,
                "home": settings.container_home.format(name=m.name),
                "bookings": bookings.get(m.id, []),
            }
        notices = [
            {"message": n.message, "starts_at": _iso(n.starts_at), "ends_at": _iso(n.ends_at)}
            for n in session.scalars(
                select(Notice)
                .where((Notice.ends_at.is_(None)) | (Notice.ends_at > now))
                .order_by(Notice.starts_at, Notice.id)
            )
        ]
    return {
        "version": helper_module.MAP_VERSION,
        "written_at": now.isoformat(),
        "group": paths.group,
        "container_user": settings.container_user,
        "host": host_info,
        "runtime": {
            "kind": runtime_kind,
            "cli": runtime_cli(svc),
            "project": settings.runtime_project,
            "env": {env_name: socket_dir} if socket_dir else {},
        },
        "members": members,
        "notices": notices,
    }


def write_map(svc: Services, paths: GatewayPaths | None = None) -> bool:
    """Write the helper's map (root only, mode 0600). Returns True when it changed."""
    paths = paths or GatewayPaths.from_settings(svc.settings)
    data = build_map(svc, paths)
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads(paths.map.read_text())
    if {k: v for k, v in old.items() if k != "written_at"} == {
        k: v for k, v in data.items() if k != "written_at"
    }:
        return False
    paths.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_atomic(paths.map, json.dumps(data, indent=1, sort_keys=True) + "\n", mode=0o600)
    return True


def refresh_map(svc: Services) -> bool:
    """Rewrite the map when the gateway is enabled (after a notice, booking or member change).
    Never raises for the gateway's sake: returns False when nothing was written."""
    if not is_enabled(svc.settings):
        return False
    try:
        return write_map(svc)
    except (LabgpuError, OSError):
        return False
