"""Finishing or undoing a `member move` that was killed half-way (run by ``labgpu reconcile``).

A move records itself in the audit log before it touches anything (``member.move``), when it commits
(``member.moved``) and when it is done (``member.move.done``) or undone (``member.move.rolled-back``).
A member whose last entry is a start or a commit has an unfinished move. Unless its process still runs,
reconcile waits for what the daemons may still be doing for it, then:

- committed: deletes the original left on the old host (a copy's source) and closes the journal;
- not committed, the cluster had already moved the container: finishes the move there (devices for the
  new host, start, commit);
- not committed, otherwise: undoes it (the copy deleted, the original started again where it was).

Either way exactly one container is left, running where the store says.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from labgpu.errors import LabgpuError, NotFound
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import OperationTimeout
from labgpu.runtime.migration import running_operations
from labgpu.services.clients import parse_host_url
from labgpu.services.context import Services
from labgpu.services.hosts import services_for
from labgpu.services.members._moves import (
    CLUSTER,
    COMMITTED,
    DONE,
    ROLLED_BACK,
    STARTED,
    MovePlan,
    commit_move,
    delete_if_members,
    dest_spec_for,
    finish_move,
    open_move,
    process_start,
    put_spec,
    roll_back,
    start_and_wait,
)
from labgpu.services.members._records import allowed_roots, container_spec, load_member
from labgpu.store.models import AuditEvent, Host, Member, utcnow


def move_in_progress(detail: dict[str, Any], at: datetime, grace: timedelta | None) -> bool:
    """Whether the process that recorded a move is still at it: on this machine, that process is alive;
    elsewhere, the move started less than ``grace`` ago."""
    if detail.get("machine") == socket.gethostname() and detail.get("pid"):
        start = process_start(int(detail["pid"]))
        return start is not None and start == detail.get("process_start")
    return grace is not None and utcnow() - at < grace


@dataclass(frozen=True)
class Recovery:
    """What reconcile did (or would do) about one interrupted move."""

    member: str
    detail: str
    changes: bool = True
    done: bool = False
    error: str | None = None
    still_moving: bool = False  # unresolved: reconcile leaves the member alone this time
    notes: tuple[str, ...] = field(default_factory=tuple)


def recover_moves(svc: Services, *, dry_run: bool = False, grace: timedelta | None = None) -> list[Recovery]:
    """Finish or undo every move that a crash left open, so each member has exactly one container,
    on the host the store names. Waits for what the daemons may still be doing for a killed move.

    A move whose process still runs (on this machine), or that started less than ``grace`` ago (on
    another), is left alone and reported."""
    with svc.session() as session:
        names = sorted(
            {
                e.target
                for e in session.scalars(
                    select(AuditEvent).where(AuditEvent.action.in_((STARTED, COMMITTED)))
                )
                if e.target
            }
        )
        pending = [(n, e) for n in names if (e := open_move(session, n)) is not None]
    out = []
    for name, event in pending:
        if move_in_progress(dict(event.detail or {}), event.at, grace):
            out.append(
                Recovery(
                    name,
                    "a move is in progress (member move is still running)",
                    changes=False,
                    still_moving=True,
                )
            )
            continue
        try:
            out.append(_recover(svc, name, event.action, dict(event.detail or {}), dry_run))
        except LabgpuError as exc:
            out.append(
                Recovery(name, "finish or undo an interrupted move", error=exc.message, still_moving=True)
            )
    return out


def _wait_quiet(runtime: RuntimeClient, container: str, timeout: float) -> None:
    """Wait for the daemon's own operations on ``container`` (a copy or move labgpu started and then
    died) to end, so that what we look at next is final."""
    for op in running_operations(runtime, container):
        with contextlib.suppress(OperationTimeout, LabgpuError):
            runtime.wait(op, what=f"wait for an operation on {container}", timeout=timeout)


def _recover(svc: Services, name: str, phase: str, detail: dict[str, Any], dry_run: bool) -> Recovery:
    with svc.session() as session:
        member = session.scalars(select(Member).where(Member.name == name)).first()
        source = session.get(Host, detail.get("from_id"))
        dest = session.get(Host, detail.get("to_id"))
    if member is None:
        if not dry_run:
            with svc.session() as session:
                svc.audit(session, ROLLED_BACK, name, reason="the member no longer exists")
        return Recovery(
            name,
            "the member of an interrupted move no longer exists: closed",
            changes=False,
            done=not dry_run,
        )
    if source is None or dest is None:
        raise NotFound(
            f"a host of {name}'s interrupted move is gone ({detail.get('from')} -> {detail.get('to')})"
        )
    container = str(detail.get("container") or member.container or name)
    src, dst = services_for(svc, source), services_for(svc, dest)
    how = str(detail.get("how"))
    run_after = bool(detail.get("run_after"))
    ports = {str(k): int(v) for k, v in (detail.get("ports") or {}).items()}

    if phase == COMMITTED:
        what = (
            f"finish the move to {dest.name}: delete the original on {source.name}"
            if how != CLUSTER
            else f"close the move to {dest.name} (the cluster moved it)"
        )
        if dry_run:
            return Recovery(name, what, still_moving=True)
        if how != CLUSTER:
            _wait_quiet(src.runtime, container, svc.settings.operation_timeout)
            if dst.runtime.instances.exists(container):
                delete_if_members(src.runtime, container, name)
        with svc.session() as session:
            svc.audit(session, DONE, name, **{"from": source.name, "to": dest.name, "by": "reconcile"})
        return Recovery(name, what, done=True)

    # Started, not committed.
    plan = _plan_for_recovery(svc, member, container, source, dest, how, run_after, ports)
    _wait_quiet(dst.runtime, container, svc.settings.operation_timeout)
    _wait_quiet(src.runtime, container, svc.settings.operation_timeout)
    if how == CLUSTER:
        inst = dst.runtime.instances.get(container)
        dest_target = parse_host_url(dest.url or "").target
        if inst.location == dest_target:
            what = f"the cluster had moved {container} to {dest.name}: finish the move there"
            if dry_run:
                return Recovery(name, what, still_moving=True)
            put_spec(dst.runtime, container, plan.dest_spec, roots=plan.roots)
            if run_after:
                start_and_wait(dst, plan, wait_ssh=False)
            commit_move(svc, plan, dst)
            finish_move(svc, plan, src)
            return Recovery(name, what, done=True)
    elif not src.runtime.instances.exists(container) and dst.runtime.instances.exists(container):
        # Only the copy is left (not a state labgpu makes, but one to come out of with one container).
        what = f"only the copy on {dest.name} is left: finish the move there"
        if dry_run:
            return Recovery(name, what, still_moving=True)
        put_spec(dst.runtime, container, plan.dest_spec, roots=plan.roots)
        if run_after:
            start_and_wait(dst, plan, wait_ssh=False)
        commit_move(svc, plan, dst)
        finish_move(svc, plan, src)
        return Recovery(name, what, done=True)
    what = f"undo the interrupted move to {dest.name}: one container again, on {source.name}"
    if dry_run:
        return Recovery(name, what, still_moving=True)
    undone = roll_back(svc, plan, src, dst)
    return Recovery(name, f"{what} ({undone})", done=True)


def _plan_for_recovery(
    svc: Services,
    member: Member,
    container: str,
    source: Host,
    dest: Host,
    how: str,
    run_after: bool,
    ports: dict[str, int],
) -> MovePlan:
    src, dst = services_for(svc, source), services_for(svc, dest)
    with svc.session() as session:
        row = load_member(session, member.name)
        source_spec = container_spec(src, row)
        dest_spec = dest_spec_for(svc, dst, row, ports)
        roots = allowed_roots(svc, session)
    return MovePlan(
        name=member.name,
        container=container,
        source=source,
        dest=dest,
        how=how,
        run_after=run_after,
        ports=ports,
        source_spec=source_spec,
        dest_spec=dest_spec,
        roots=roots,
        keys=[],
        email=None,
    )
