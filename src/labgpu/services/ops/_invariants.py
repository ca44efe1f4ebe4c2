"""Invariants: what must hold between the store, the daemons and the host folders once labgpu is at rest.

Reconcile repairs drift; this module only looks, and says whether anything is still wrong. It is what
``labgpu reconcile --check`` prints and what the fault-injection suite (tests/reliability) asserts after
every recovery:

- ``settled``: no member is left half-way (``provisioning``, ``removing``, or a move not resolved);
- ``one-container``: every member has exactly one instance labelled as theirs, with the name and on the
  host the store says; and no instance is labelled for someone who is no member (an orphan);
- ``ports``: no host port is allocated twice (store) or listened on by two proxy devices (daemon);
- ``home``: every member's home folder exists; marker files written before a fault are intact, in the
  home or, for a removed member, in the home archive;
- ``drift``: a reconcile dry run has nothing left to repair (devices, config keys, running state);
- ``bookings``: the GPUs written into containers are exactly those of the active bookings.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from labgpu.domain.gpus import booked_device_index
from labgpu.errors import LabgpuError
from labgpu.runtime.instances import Instance
from labgpu.services import gpus, members
from labgpu.services.context import Services
from labgpu.services.hosts import on_member, runtime_for
from labgpu.services.members import open_move, reachable_here
from labgpu.services.ops._reconcile import reconcile
from labgpu.store.models import Host, Member, MemberState

INVARIANTS = ("settled", "one-container", "ports", "home", "drift", "bookings")


@dataclass(frozen=True)
class Marker:
    """A file written into a member's home before a fault: it must still be there, unchanged."""

    path: str  # relative to the home folder
    content: str


@dataclass(frozen=True)
class Violation:
    """One invariant that does not hold, and for whom."""

    invariant: str
    subject: str  # a member, a host or a port
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class InvariantReport:
    """How many checks of each invariant were made, and which failed."""

    checked: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def checks(self) -> int:
        return sum(self.checked.values())

    def fail(self, invariant: str, subject: str, detail: str) -> None:
        self.violations.append(Violation(invariant, subject, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": self.checks,
            "checked": dict(self.checked),
            "violations": [v.as_dict() for v in self.violations],
        }


@dataclass(frozen=True)
class _Row:
    name: str
    state: MemberState
    container: str | None
    host_id: int | None
    host_name: str | None
    moving: bool
    ports: tuple[tuple[int | None, str, int], ...]
    has_uid: bool


def check_invariants(
    svc: Services,
    *,
    markers: Mapping[str, Marker] | None = None,
    owners: Collection[str] | None = None,
) -> InvariantReport:
    """Check every invariant (see the module) and return what was checked and what does not hold.

    ``markers``: member -> a file that must be intact in their home (or its archive, once removed).
    ``owners``: look only at these members' instances and proxies on the daemons (a daemon shared with
    other labgpu installations or test runs); None: every instance labelled by labgpu. Changes nothing.
    Raises RuntimeUnavailable when the local daemon cannot be listed; another host that cannot be
    listed is a violation."""
    report = InvariantReport()
    rows, hosts = _read_store(svc)
    scope = set(owners) if owners is not None else None
    listings = _list_hosts(svc, report, hosts)

    _check_settled(report, rows)
    _check_containers(report, rows, listings, scope)
    _check_ports(report, rows, listings, scope)
    _check_homes(svc, report, rows, hosts, markers or {})
    _check_drift(svc, report, scope)
    _check_bookings(svc, report, rows, listings)
    return report


def _read_store(svc: Services) -> tuple[list[_Row], dict[int | None, Host | None]]:
    with svc.session() as session:
        found = session.scalars(
            select(Member).options(selectinload(Member.port_maps), selectinload(Member.host))
        ).all()
        rows = [
            _Row(
                name=m.name,
                state=m.state,
                container=m.container,
                host_id=m.host_id,
                host_name=m.host.name if m.host else None,
                moving=open_move(session, m.name) is not None,
                ports=tuple((p.host_id, p.listen_address, p.host_port) for p in m.port_maps),
                has_uid=m.uid is not None,
            )
            for m in found
        ]
        hosts: dict[int | None, Host | None] = {h.id: h for h in session.scalars(select(Host))}
        if not any(h is not None and h.url is None for h in hosts.values()):
            hosts[None] = None  # the local daemon, before it has a host row
        session.expunge_all()
    return rows, hosts


def _list_hosts(
    svc: Services, report: InvariantReport, hosts: Mapping[int | None, Host | None]
) -> dict[int | None, list[Instance]]:
    """host id -> the instances located on that host (one listing per host)."""
    out: dict[int | None, list[Instance]] = {}
    for host_id, host in hosts.items():
        try:
            runtime = runtime_for(svc, host)
            out[host_id] = on_member(runtime.instances.all(with_state=False), runtime.target)
        except LabgpuError as exc:
            if host is None or host.url is None:
                raise
            report.checked["one-container"] += 1
            report.fail("one-container", host.name, f"host {host.name} could not be listed: {exc.message}")
    return out


def _check_settled(report: InvariantReport, rows: list[_Row]) -> None:
    for row in rows:
        report.checked["settled"] += 1
        if row.moving:
            report.fail("settled", row.name, "a move is not finished or rolled back (run `labgpu reconcile`)")
        elif row.state in (MemberState.PROVISIONING, MemberState.REMOVING):
            report.fail("settled", row.name, f"left in state {row.state} (run `labgpu reconcile`)")


def _owned(listings: Mapping[int | None, list[Instance]]) -> dict[str, list[tuple[int | None, Instance]]]:
    owned: dict[str, list[tuple[int | None, Instance]]] = defaultdict(list)
    for host_id, instances in listings.items():
        for inst in instances:
            owner = inst.label("owner")
            if owner is not None:
                owned[owner].append((host_id, inst))
    return owned


def _check_containers(
    report: InvariantReport,
    rows: list[_Row],
    listings: Mapping[int | None, list[Instance]],
    scope: set[str] | None,
) -> None:
    owned = _owned(listings)
    names = {r.name for r in rows}
    for row in rows:
        if not row.has_uid or row.moving:
            continue  # nothing made yet / the move check above speaks for it
        report.checked["one-container"] += 1
        theirs = owned.get(row.name, [])
        where = (
            ", ".join(f"{inst.name} on {inst.location or 'the local daemon'}" for _, inst in theirs) or "none"
        )
        if row.state == MemberState.REMOVING:
            if len(theirs) > 1:
                report.fail(
                    "one-container", row.name, f"being removed, with {len(theirs)} instances: {where}"
                )
            continue
        if len(theirs) != 1:
            report.fail("one-container", row.name, f"{len(theirs)} instances labelled as theirs: {where}")
            continue
        host_id, inst = theirs[0]
        if inst.name != row.container:
            report.fail(
                "one-container", row.name, f"their instance is {inst.name}, the store says {row.container}"
            )
        if host_id != row.host_id and row.host_id is not None:
            report.fail(
                "one-container", row.name, f"their container is on another host than {row.host_name}: {where}"
            )
    for owner, theirs in sorted(owned.items()):
        if owner in names or (scope is not None and owner not in scope):
            continue
        report.checked["one-container"] += 1
        where = ", ".join(inst.name for _, inst in theirs)
        report.fail(
            "one-container", owner, f"orphan: labelled as {owner}'s, but there is no such member: {where}"
        )


def _check_ports(
    report: InvariantReport,
    rows: list[_Row],
    listings: Mapping[int | None, list[Instance]],
    scope: set[str] | None,
) -> None:
    allocated = Counter(port for row in rows for port in row.ports)
    for (host_id, listen, port), count in sorted(allocated.items(), key=lambda kv: kv[0][2]):
        report.checked["ports"] += 1
        if count > 1:
            report.fail("ports", f"{listen}:{port}", f"allocated {count} times in the store (host {host_id})")
    for instances in listings.values():
        listeners: dict[str, list[str]] = defaultdict(list)
        for inst in instances:
            owner = inst.label("owner")
            if scope is not None and owner not in scope:
                continue
            for dev_name, dev in inst.devices.items():
                if dev.get("type") == "proxy" and dev.get("listen"):
                    listeners[dev["listen"]].append(f"{inst.name}/{dev_name}")
        for listen, users in sorted(listeners.items()):
            report.checked["ports"] += 1
            if len(users) > 1:
                report.fail("ports", listen, f"listened on by {len(users)} proxy devices: {', '.join(users)}")


def _check_homes(
    svc: Services,
    report: InvariantReport,
    rows: list[_Row],
    hosts: Mapping[int | None, Host | None],
    markers: Mapping[str, Marker],
) -> None:
    present = {r.name: r for r in rows}
    for row in rows:
        if not row.has_uid or not reachable_here(svc, hosts.get(row.host_id)):
            continue
        report.checked["home"] += 1
        home = members.home_dir(svc, row.name)
        if row.state != MemberState.REMOVING and not home.is_dir():
            report.fail("home", row.name, f"no home folder at {home}")
    for name, marker in sorted(markers.items()):
        report.checked["home"] += 1
        places = [members.home_dir(svc, name)]
        if name not in present or present[name].state == MemberState.REMOVING:
            archive = svc.settings.home_archive
            places += sorted(archive.glob(f"{name}-*")) if archive.is_dir() else []
        if not any(_intact(place / marker.path, marker.content) for place in places):
            looked = ", ".join(str(p) for p in places)
            report.fail("home", name, f"{marker.path} is missing or changed (looked in {looked})")


def _intact(path: Path, content: str) -> bool:
    try:
        return path.read_text() == content
    except (OSError, UnicodeDecodeError):
        return False


def _check_drift(svc: Services, report: InvariantReport, scope: set[str] | None) -> None:
    dry = reconcile(svc, dry_run=True)
    for action in dry.actions:
        if scope is not None and action.member not in scope:
            continue
        report.checked["drift"] += 1
        if action.changes or action.error:
            what = f"{action.action}: {action.detail}" + (f" ({action.error})" if action.error else "")
            report.fail("drift", action.member, f"reconcile would still {what}")
    report.checked["drift"] += 1  # the dry run itself, even when it reports nothing


def _check_bookings(
    svc: Services,
    report: InvariantReport,
    rows: list[_Row],
    listings: Mapping[int | None, list[Instance]],
) -> None:
    containers = {r.name: (r.host_id, r.container) for r in rows}
    with svc.session() as session:
        host_ids = [h for h in listings if h is not None]
        wanted = {host_id: gpus.active_gpus(session, host_id) for host_id in host_ids}
    for host_id, instances in listings.items():
        by_name = {i.name: i for i in instances}
        for name, (member_host, container) in sorted(containers.items()):
            if member_host != host_id or container is None:
                continue
            inst = by_name.get(container)
            if inst is None or inst.label("owner") != name:
                continue  # the one-container check speaks for it
            report.checked["bookings"] += 1
            have = {i for dev in inst.devices if (i := booked_device_index(dev)) is not None}
            want = wanted[host_id].get(name, set()) if host_id is not None else set()
            if have != want:
                report.fail(
                    "bookings",
                    name,
                    f"container {container} carries booked GPUs {sorted(have)}, "
                    f"the active bookings hold {sorted(want)}",
                )
