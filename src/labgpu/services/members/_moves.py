"""Moving a member's container to another host (cold), and finishing moves that were interrupted.

``member move NAME --to HOST``:

1. checks (the host exists, is not drained, has the profile and the GPUs the member asked for, has no
   instance of that name; LXD to Incus is refused), plans the ports on the new host, and RECORDS the
   move in the audit log (``member.move``) before touching anything;
2. stops the container;
3. moves it: within a cluster the runtime moves it itself (a POST to the instance with ``?target=``);
   between standalone daemons one daemon copies it to the other (the migration API, pull or push),
   with the config and devices the NEW host needs: the home mount, ``raw.idmap``, proxies on the new
   ports, GPU devices for that host's GPUs, limits;
4. brings the home along (rsync over SSH when homes are on each host's own disk; nothing with
   ``homes_shared``);
5. starts it there (when the member's container should run) and waits for sshd;
6. COMMITS in one transaction (``member.moved``): the member's host and ports change;
7. only then deletes the source container (``member.move.done``), and tells the member (mail, or their own channels).

A failure before the commit puts everything back (the copy deleted, the container moved back, the
source started). A process killed on the way leaves the move recorded but not committed or not
finished: :mod:`labgpu.services.members._move_recovery` (run by ``labgpu reconcile``) then rolls it back, or
forward when the runtime had already finished the move, so that exactly one container is left, running
where the store says.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labgpu.domain.apps import DEVICE_PREFIX as APP_DEVICE_PREFIX
from labgpu.domain.container import CONTAINER_PORTS, ContainerSpec, PortSpec, check_safe, missing_gpus
from labgpu.domain.members import parse_gpu_request
from labgpu.errors import BadInput, Conflict, LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.runtime.migration import Peer, copy_instance, move_in_cluster
from labgpu.services import notify
from labgpu.services.clients import parse_host_url, server_cert_path
from labgpu.services.context import Services
from labgpu.services.hosts import public_address, services_for
from labgpu.services.members import _homes as homes
from labgpu.services.members._apply import desired_patch, owned_instance
from labgpu.services.members._placement import new_port_maps
from labgpu.services.members._provision import checkpoint
from labgpu.services.members._records import allowed_roots, container_spec, load_member
from labgpu.services.members._ssh import wait_ssh_on
from labgpu.services.members._steps import StepReporter, silent
from labgpu.store.models import (
    AuditEvent,
    Booking,
    BookingStatus,
    Host,
    Member,
    MemberState,
    PortMap,
    PortPurpose,
)

# The move's journal, in the audit log (target = the member).
STARTED = "member.move"
COMMITTED = "member.moved"
DONE = "member.move.done"
ROLLED_BACK = "member.move.rolled-back"
JOURNAL = (STARTED, COMMITTED, DONE, ROLLED_BACK)

CLUSTER = "cluster"
COPY = "copy"


class MoveFailed(LabgpuError):
    """A move failed and was rolled back: the member is where they were."""

    reason = "move-failed"


@dataclass(frozen=True)
class MoveResult:
    name: str
    source: str
    dest: str
    how: str  # "cluster" or "copy (pull)" / "copy (push)"
    address: str
    ports: dict[str, int]
    home: str
    running: bool
    mailed: bool = False
    notes: tuple[str, ...] = ()

    def ssh_command(self) -> str:
        return f"ssh -p {self.ports['ssh']} {{user}}@{self.address}" if "ssh" in self.ports else ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class MovePlan:
    """Everything a move needs, read before anything changes (plain values: no ORM rows)."""

    name: str
    container: str
    source: Host
    dest: Host
    how: str
    run_after: bool  # the member's container should run
    ports: dict[str, int]  # planned on the destination
    source_spec: ContainerSpec
    dest_spec: ContainerSpec
    roots: list[str]
    keys: list[str]
    email: str | None

    def detail(self) -> dict[str, Any]:
        return {
            **this_process(),
            "from": self.source.name,
            "from_id": self.source.id,
            "to": self.dest.name,
            "to_id": self.dest.id,
            "how": self.how,
            "run_after": self.run_after,
            "ports": self.ports,
            "container": self.container,
        }


def process_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), to tell it from a later one with the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def this_process() -> dict[str, Any]:
    """Who is moving (pid, machine, process start), recorded so that reconcile leaves a live move alone."""
    pid = os.getpid()
    return {"pid": pid, "machine": socket.gethostname(), "process_start": process_start(pid)}


def same_cluster(a: Host, b: Host) -> bool:
    """Whether two hosts are members of one cluster (a move the runtime does itself)."""
    if not a.url or not b.url:
        return False
    x, y = parse_host_url(a.url), parse_host_url(b.url)
    return x.cluster is not None and x.cluster == y.cluster and x.target is not None and y.target is not None


def open_move(session: Session, name: str) -> AuditEvent | None:
    """The member's unfinished move (its last journal entry is a start or a commit), or None."""
    last = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.target == name, AuditEvent.action.in_(JOURNAL))
        .order_by(AuditEvent.id.desc())
        .limit(1)
    ).first()
    return last if last is not None and last.action in (STARTED, COMMITTED) else None


def _peer(svc: Services, host: Host, client: RuntimeClient) -> Peer:
    if host.url and parse_host_url(host.url).is_https:
        pem_path = server_cert_path(svc.settings, host.name)
        pem = pem_path.read_text() if pem_path.is_file() else None
        return Peer(client=client, url=parse_host_url(host.url).base, certificate=pem)
    return Peer(client=client, url=None, certificate=None)


def _spec_with_ports(spec: ContainerSpec, ports: dict[str, int], listen: str) -> ContainerSpec:
    return replace(
        spec,
        ports=tuple(PortSpec(p, listen, port, CONTAINER_PORTS[p]) for p, port in sorted(ports.items())),
    )


def dest_spec_for(svc: Services, dst: Services, member: Member, ports: dict[str, int]) -> ContainerSpec:
    """The container the member gets on the new host: its GPUs, the planned ports, the next spec
    version (the one the commit records)."""
    spec = container_spec(dst, member)
    spec = _spec_with_ports(spec, ports, svc.settings.listen_address)
    return replace(spec, spec_version=member.spec_version + 1)


# Planning -------------------------------------------------------------------------------------------


def _plan(svc: Services, name: str, to: str) -> MovePlan:
    with svc.session() as session:
        member = load_member(session, name)
        if member.state not in (MemberState.RUNNING, MemberState.STOPPED):
            raise Conflict(f"member {name} is {member.state}; finish that first (`labgpu reconcile`)")
        if open_move(session, name) is not None:
            raise Conflict(
                f"a move of {name} is unfinished", hint="run `labgpu reconcile` to finish or undo it"
            )
        if member.container is None or member.uid is None:
            raise Conflict(f"member {name} has no container to move")
        dest = session.scalars(select(Host).where(Host.name == to)).first()
        if dest is None:
            raise BadInput(f"no host named {to}", hint="list them with `labgpu host list`")
        source = member.host
        if source is None:
            raise Conflict(f"member {name} is not placed on any host; `labgpu reconcile` places them")
        if dest.id == source.id:
            raise BadInput(f"{name}'s container is on {to} already")
        if dest.drained:
            raise BadInput(
                f"host {to} is drained: it takes no new containers", hint=f"`labgpu host undrain {to}`"
            )
        live = session.scalars(
            select(Booking.id).where(
                Booking.member_id == member.id,
                Booking.host_id == source.id,
                Booking.status.in_((BookingStatus.PENDING, BookingStatus.APPROVED, BookingStatus.ACTIVE)),
            )
        ).all()
        if live:
            raise Conflict(
                f"{name} has {len(live)} GPU booking(s) on {source.name}, which stay with its GPUs",
                hint=f"cancel them first (`labgpu gpu bookings --member {name}`, `labgpu gpu cancel ID`), then move",
            )
        src_svc, dst_svc = services_for(svc, source), services_for(svc, dest)
        source_spec = container_spec(src_svc, member)
        roots = allowed_roots(svc, session)
        keys = [k.public_key for k in member.ssh_keys]
        purposes = [str(p.purpose) for p in member.port_maps]
        planned = new_port_maps(session, svc.settings, dest.id, purposes)
        ports = {str(pm.purpose): pm.host_port for pm in planned}  # only numbers for now: never added
        dest_spec = dest_spec_for(svc, dst_svc, member, ports)
        run_after = member.state == MemberState.RUNNING
        email, container, gpu_spec = member.email, member.container, member.gpu_spec
    if same_cluster(source, dest):
        how = CLUSTER
    else:
        how = COPY
        src_kind, dst_kind = src_svc.runtime.server().kind, dst_svc.runtime.server().kind
        if src_kind != dst_kind:
            raise BadInput(
                f"{source.name} runs {src_kind} and {to} runs {dst_kind}: moving between LXD and Incus is not supported"
            )
        if dst_svc.runtime.instances.exists(container):
            raise Conflict(f"{to} has an instance named {container} already; labgpu leaves it alone")
    if dst_svc.runtime.profiles.find(svc.settings.profile_name) is None:
        raise BadInput(
            f"host {to} has no {svc.settings.profile_name} profile",
            hint="run `labgpu host init` on that host",
        )
    missing = missing_gpus(parse_gpu_request(gpu_spec or svc.settings.default_gpus), dest_spec.host_gpus)
    if missing:
        raise BadInput(
            f"host {to} has no GPU {', '.join(map(str, missing))} (the member has --gpus {gpu_spec})"
        )
    # Refuses an instance that is not the member's, before anything changes.
    if owned_instance(src_svc, name, container) is None:
        raise Conflict(
            f"{name}'s container {container} is missing on {source.name}", hint="`labgpu reconcile` first"
        )
    check_safe(dest_spec.config(), dest_spec.devices(), allowed_roots=roots)
    return MovePlan(
        name=name,
        container=container,
        source=source,
        dest=dest,
        how=how,
        run_after=run_after,
        ports=ports,
        source_spec=source_spec,
        dest_spec=dest_spec,
        roots=roots,
        keys=keys,
        email=email,
    )


# Moving ---------------------------------------------------------------------------------------------


def move_member(
    svc: Services, name: str, to: str, *, wait_ssh: bool = True, report: StepReporter = silent
) -> MoveResult:
    """Move ``name``'s container to host ``to`` (cold), keeping home, keys and GPU request.

    Raises BadInput / Conflict before anything changes; MoveFailed when a step failed and the move
    was rolled back (the member is where they were). Waits for every step, sshd included. Audited as
    ``member.move`` (started), ``member.moved`` (committed), ``member.move.done``. ``report`` is told
    each step as it begins."""
    report("planning the move")
    plan = _plan(svc, name, to)
    src = services_for(svc, plan.source)
    dst = services_for(svc, plan.dest)
    with svc.session() as session:
        svc.audit(session, STARTED, name, **plan.detail())
    checkpoint("move-marked")
    notes: list[str] = []
    how = plan.how
    try:
        report(f"stopping the container on {plan.source.name}")
        with contextlib.suppress(RuntimeNotFound):
            if src.runtime.instances.state(plan.container).status != "Stopped":
                src.runtime.instances.stop(plan.container)
        checkpoint("move-stopped")
        report(f"moving the container to {plan.dest.name}")
        how = _transfer(svc, plan, src, dst)
        checkpoint("move-copied")
        report("moving the home folder")
        notes.append(homes.transfer_home(svc, plan.source, plan.dest, name))
        checkpoint("move-home")
        if plan.run_after:
            start_and_wait(dst, plan, wait_ssh=wait_ssh, report=report)
        checkpoint("move-started")
    except LabgpuError as exc:
        undone = roll_back(svc, plan, src, dst)
        raise MoveFailed(
            f"moving {name} to {to} failed and was undone ({undone}): {exc.message}", hint=exc.hint
        ) from exc
    report("recording the new host")
    ports = commit_move(svc, plan, dst)
    checkpoint("move-committed")
    report(f"deleting the original on {plan.source.name}")
    finish_move(svc, plan, src)
    address = public_address(plan.dest, svc.settings)
    mailed = _tell_member(svc, plan, address, ports, notes)
    return MoveResult(
        name=name,
        source=plan.source.name,
        dest=plan.dest.name,
        how=how,
        address=address,
        ports=ports,
        home=str(homes.home_path(svc, name)),
        running=plan.run_after,
        mailed=mailed,
        notes=tuple(notes),
    )


def _transfer(svc: Services, plan: MovePlan, src: Services, dst: Services) -> str:
    spec = plan.dest_spec
    if plan.how == CLUSTER:
        target = parse_host_url(plan.dest.url or "").target
        assert target is not None
        _drop_app_devices(src.runtime, plan.container)
        move_in_cluster(src.runtime, plan.container, target, timeout=svc.settings.operation_timeout)
        put_spec(dst.runtime, plan.container, spec, roots=plan.roots)
        return CLUSTER
    inst = src.runtime.instances.get(plan.container)
    config = {k: v for k, v in inst.config.items() if k.startswith("image.")} | spec.config()
    mode = copy_instance(
        _peer(svc, plan.source, src.runtime),
        _peer(svc, plan.dest, dst.runtime),
        plan.container,
        config=config,
        devices=spec.devices(),
        profiles=[spec.profile],
        description=inst.description or f"labgpu container of {plan.name}",
        timeout=svc.settings.operation_timeout,
        started=lambda: checkpoint("move-copying"),
    )
    return f"{COPY} ({mode})"


def _drop_app_devices(runtime: RuntimeClient, container: str) -> None:
    """Web apps' proxy devices listen on a socket of THIS host's labgpu: on another cluster member the folder
    is missing and the container would not start. They are made again when an app is next opened."""
    inst = runtime.instances.get(container)
    stale: dict[str, dict[str, str] | None] = {
        n: None for n in inst.devices if n.startswith(APP_DEVICE_PREFIX)
    }
    if stale:
        runtime.instances.update(container, devices=stale)


def put_spec(runtime: RuntimeClient, container: str, spec: ContainerSpec, *, roots: list[str]) -> None:
    """Put ``spec``'s config and devices on the container (labgpu's own keys and devices only).
    Raises BadInput, before any request, when check_safe refuses the spec (``roots``: allowed_roots)."""
    check_safe(spec.config(), spec.devices(), allowed_roots=roots)
    inst = runtime.instances.get(container)
    config, devices = desired_patch(spec.config(), spec.devices(), inst.config, inst.devices)
    if config or devices:
        runtime.instances.update(container, config=config, devices=devices)


def start_and_wait(dst: Services, plan: MovePlan, *, wait_ssh: bool, report: StepReporter = silent) -> None:
    """Start the moved container on the new host and, with ``wait_ssh``, wait for its sshd at the new
    address and port. Raises ProvisionError when sshd does not answer in time."""
    runtime = dst.runtime
    report(f"starting the container on {plan.dest.name}")
    if runtime.instances.state(plan.container).status != "Running":
        runtime.instances.start(plan.container)
    if wait_ssh and "ssh" in plan.ports:
        report("waiting for sshd")
        wait_ssh_on(dst, plan.dest, dst.settings.listen_address, plan.ports["ssh"], plan.container)


def commit_move(svc: Services, plan: MovePlan, dst: Services) -> dict[str, int]:
    """The one transaction that makes the new host the member's: host, ports, spec version."""
    ports = dict(plan.ports)
    for attempt in range(5):
        try:
            with svc.session() as session:
                member = load_member(session, plan.name)
                for pm in list(member.port_maps):
                    member.port_maps.remove(pm)
                session.flush()
                member.host_id = plan.dest.id
                for purpose, port in sorted(ports.items()):
                    member.port_maps.append(
                        PortMap(
                            host_id=plan.dest.id,
                            listen_address=svc.settings.listen_address,
                            host_port=port,
                            container_port=CONTAINER_PORTS[purpose],
                            purpose=PortPurpose(purpose),
                        )
                    )
                member.spec_version = plan.dest_spec.spec_version
                session.flush()
                svc.audit(session, COMMITTED, plan.name, **{**plan.detail(), "ports": ports})
            return ports
        except IntegrityError:
            if attempt == 4:
                raise
            # Someone took a planned port on the new host meanwhile: take others, and tell the proxies.
            with svc.session() as session:
                fresh = new_port_maps(session, svc.settings, plan.dest.id, sorted(ports))
                ports = {str(pm.purpose): pm.host_port for pm in fresh}
            spec = _spec_with_ports(plan.dest_spec, ports, svc.settings.listen_address)
            put_spec(dst.runtime, plan.container, spec, roots=plan.roots)
    return ports


def finish_move(svc: Services, plan: MovePlan, src: Services) -> None:
    """After the commit: delete the source container (a copy's original), close the journal."""
    if plan.how != CLUSTER:
        delete_if_members(src.runtime, plan.container, plan.name)
    checkpoint("move-source-deleted")
    with svc.session() as session:
        svc.audit(session, DONE, plan.name, **{"from": plan.source.name, "to": plan.dest.name})


def delete_if_members(runtime: RuntimeClient, container: str, owner: str) -> bool:
    """Delete ``container`` when it exists and is marked as ``owner``'s; True when it was deleted. Waits."""
    try:
        inst = runtime.instances.get(container)
    except RuntimeNotFound:
        return False
    if inst.label("owner") != owner:
        return False
    if inst.status != "Stopped":
        runtime.instances.stop(container, force=True)
    runtime.instances.delete(container)
    return True


def roll_back(svc: Services, plan: MovePlan, src: Services, dst: Services) -> str:
    """Undo a move that has not been committed: one container again, on the source, as it was."""
    done = []
    try:
        if plan.how == CLUSTER:
            inst = src.runtime.instances.get(plan.container)
            source_target = parse_host_url(plan.source.url or "").target
            if source_target and inst.location != source_target:
                if inst.status != "Stopped":
                    src.runtime.instances.stop(plan.container, force=True)
                move_in_cluster(
                    src.runtime, plan.container, source_target, timeout=svc.settings.operation_timeout
                )
                done.append(f"moved back to {plan.source.name}")
            put_spec(src.runtime, plan.container, plan.source_spec, roots=plan.roots)
        elif src.runtime.instances.exists(plan.container) and delete_if_members(
            dst.runtime, plan.container, plan.name
        ):
            done.append(f"the copy on {plan.dest.name} deleted")
        if plan.run_after and src.runtime.instances.state(plan.container).status != "Running":
            src.runtime.instances.start(plan.container)
            done.append(f"started again on {plan.source.name}")
    except LabgpuError as exc:
        done.append(f"undoing failed too: {exc.message}; `labgpu reconcile` finishes it")
        return "; ".join(done)
    with svc.session() as session:
        svc.audit(session, ROLLED_BACK, plan.name, **{"from": plan.source.name, "to": plan.dest.name})
    return "; ".join(done) or "nothing had changed yet"


def _tell_member(
    svc: Services, plan: MovePlan, address: str, ports: dict[str, int], notes: list[str]
) -> bool:
    user = svc.settings.container_user
    lines = [
        f"Hello {plan.name},",
        "",
        f"your container has moved to the host {plan.dest.name}. Your home folder and everything in the",
        "container came along; only the address to connect to has changed:",
        "",
        f"    ssh -p {ports['ssh']} {user}@{address}" if "ssh" in ports else "",
        "",
        "In ~/.ssh/config:",
        "",
        f"    Host labgpu-{plan.name}",
        f"        HostName {address}",
        f"        Port {ports.get('ssh', 22)}",
        f"        User {user}",
        "",
    ]
    for purpose in ("rdp", "vnc"):
        if purpose in ports:
            lines.append(f"{purpose.upper()}: {address}:{ports[purpose]}")
    lines.append("SSH will warn that the host key changed for the new address: that is expected this once.")
    # Queued and retried (services/notify): a mail server that is down does not fail the move.
    subject = f"[labgpu] your container moved to {plan.dest.name}: new address {address}:{ports.get('ssh')}"
    return notify.send(svc, notify.CONTAINER, [plan.name], subject, "\n".join(lines) + "\n") > 0
