"""Adding a member: validate the request, write the desired state in one transaction, provision.

``add_member`` writes the desired state in one transaction (member row, uid,
ports, keys, shares) and then :func:`~labgpu.services.members._provision.provision` brings the daemon to it in
steps that are each safe to repeat. A crash at any point is repaired by running
``member add`` again or ``reconcile``: the row says what should exist, and each
step checks what does before acting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from labgpu.domain.container import missing_gpus
from labgpu.domain.members import (
    allocate_uid,
    parse_gpu_request,
    parse_size,
    validate_cpu,
    validate_member_name,
)
from labgpu.errors import N_, BadInput, Conflict
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.hosts import local_host, place, services_for, validate_host_name
from labgpu.services.members._keys import gateway_changed, read_keys
from labgpu.services.members._my_templates import is_member_template
from labgpu.services.members._placement import _ALLOCATION_RETRIES, new_port_maps
from labgpu.services.members._provision import checkpoint, provision
from labgpu.services.members._records import ConnectionSheet, MemberRequest, host_gpus
from labgpu.services.members._steps import StepReporter, silent
from labgpu.store.db import violated_constraint
from labgpu.store.models import Host, Member, MemberState, Share, SshKey


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
        validate_host_name(host)
    if email is not None and ("@" not in email or len(email) > 254 or any(c.isspace() for c in email)):
        raise BadInput(f"invalid e-mail address {email!r}")
    if template and (len(template) > 255 or not template.isprintable() or any(c.isspace() for c in template)):
        raise BadInput(
            f"invalid template {template[:60]!r}: an image alias has no spaces or control characters"
        )
    if template and is_member_template(template):
        raise BadInput(
            N_(
                "template %(template)s is a member's own template: a new member's container is not made from it"
            ),
            values={"template": template[:120]},
            hint="its owner resets their container to it: `labgpu member reset NAME --template ALIAS`",
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


# Add ----------------------------------------------------------------------------------------------


def add_member(
    svc: Services, request: MemberRequest, *, wait_ssh: bool = True, report: StepReporter = silent
) -> ConnectionSheet:
    """Add a member and provision their container; return the connection sheet (with the password).

    The container goes to ``request.host``, or to the host placement chooses (the sheet's notes say
    which and why). A member left half-made by a crash (state provisioning) is resumed when
    added again. ``report`` is told each step as it begins (members._steps). Raises BadInput /
    Conflict before touching anything when the request is wrong, ProvisionError (member kept,
    resumable) when a step fails."""
    report("placement and desired state")
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
    sheet = provision(svc, request.name, wait_ssh=wait_ssh, report=report)
    return replace(sheet, notes=(*sheet.notes, *notes, *gateway_changed(svc, request.name)))


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
    missing = missing_gpus(request.gpus, host_gpus(runtime)) if request.gpus.mode == "indexes" else []
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
