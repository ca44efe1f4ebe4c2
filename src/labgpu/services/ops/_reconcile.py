"""Reconcile: bring the daemon back to the store's desired state, and say what was done.

The store says what should exist; the daemon says what does. :func:`reconcile`
reads both (ONE instance listing per host), then repairs the drift it finds,
member by member, each repair safe to repeat:

- a member still ``provisioning`` (a crashed or failed ``member add``) is
  finished with :func:`labgpu.services.members.provision`;
- a member whose container is missing gets it back, made from the template
  (the home folder on the host is kept and mounted again);
- labgpu's devices (home, shares, proxies, GPUs, the root disk size) and config
  keys (``user.labgpu.*``, ``raw.idmap``, limits, autostart) are put back as
  :class:`~labgpu.domain.container.ContainerSpec` says;
- a container that should run but is stopped is started; one that should be
  stopped is left stopped.

It never deletes or changes an instance labgpu does not own: instances without
``user.labgpu.owner`` are "foreign" and only listed; instances with an owner
that no member row explains are "orphans" and only reported, with how to
remove them by hand. A new initial password is set whenever a container is
(re)made, but never shown: reports go to logs and JSON, so the admin hands one
over with ``labgpu member passwd NAME``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from labgpu.domain.container import ContainerSpec, check_safe
from labgpu.errors import LabgpuError
from labgpu.runtime.instances import Instance
from labgpu.services import members as members_svc
from labgpu.services import portal
from labgpu.services.context import Services
from labgpu.services.hosts import recorded_local_host, services_for
from labgpu.store.models import Application, ApplicationStatus, Host, Member, MemberState, utcnow

# Actions a report can hold. The first group changes something (done=True once carried out);
# the second only reports.
PROVISION = "provision"
RECREATE = "recreate"
DEVICE = "device"
REMOVE_DEVICE = "remove-device"
CONFIG = "config"
START = "start"
FINISH_REMOVAL = "finish-removal"
MOVE = "move"  # an interrupted `member move` finished or rolled back
APPLICATION = "application"  # an approved application provisioned (the portal was down or died)
MIRRORS = "mirrors"  # package mirror files brought to the settings (apt_mirror, pip_index_url, conda_mirror)
CHANGING_ACTIONS = frozenset(
    {PROVISION, RECREATE, DEVICE, REMOVE_DEVICE, CONFIG, START, FINISH_REMOVAL, MOVE, APPLICATION}
)

FOREIGN = "foreign"
ORPHAN = "orphan"
CONFLICT = "conflict"
NOTE = "note"
SKIP = "skip"

# Config keys labgpu sets on a member's container; a key among these that the spec leaves out
# (a limit back to the policy default) is removed from the instance.
_MANAGED_OPTIONAL_KEYS = ("limits.cpu", "limits.memory")
# Device names that belong to labgpu: one of these the spec does not list is stale.
_MANAGED_DEVICE_PREFIXES = ("labgpu-", "share-")


@dataclass(frozen=True)
class Action:
    """One thing reconcile did, would do (dry run), or only reports."""

    member: str  # the member, or the instance's name for foreign and orphan instances
    action: str
    detail: str
    done: bool = False
    error: str | None = None

    @property
    def changes(self) -> bool:
        """True for a repair (done or, in a dry run, planned), False for a report."""
        return self.action in CHANGING_ACTIONS

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReconcileReport:
    """What one reconcile run found and did."""

    dry_run: bool
    members: int = 0
    instances: int = 0
    actions: list[Action] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(a.done for a in self.actions)

    @property
    def repairs(self) -> list[Action]:
        return [a for a in self.actions if a.changes]

    @property
    def failures(self) -> list[Action]:
        return [a for a in self.actions if a.error]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "members": self.members,
            "instances": self.instances,
            "changed": self.changed,
            "failed": bool(self.failures),
            "actions": [a.as_dict() for a in self.actions],
        }


@dataclass(frozen=True)
class _Desired:
    """A member's desired state, read from the store in one transaction."""

    name: str
    state: MemberState
    spec: ContainerSpec | None  # None: the member has no container (no uid yet)
    updated_at: datetime


def reconcile(
    svc: Services, *, dry_run: bool = False, provisioning_grace: timedelta | None = None
) -> ReconcileReport:
    """Compare the store with the daemon and repair the drift; return what was found and done.

    ``dry_run`` changes nothing and reports what would be done. ``provisioning_grace``
    leaves alone members that entered ``provisioning`` less than that long ago (a
    periodic job should not race a ``member add`` that is still running).
    Waits for every repair (finishing a provisioning waits for sshd). Raises
    RuntimeUnavailable when the daemon cannot be listed; a repair that fails is
    recorded in the report (``error``) and the others still run.
    """
    report = ReconcileReport(dry_run=dry_run)
    # Moves first: a member whose move was interrupted gets exactly one container again (on the old
    # host or the new one) before anything else looks at it.
    moving = set()
    for step in members_svc.recover_moves(svc, dry_run=dry_run, grace=provisioning_grace):
        report.actions.append(
            Action(step.member, MOVE if step.changes else NOTE, step.detail, step.done, step.error)
        )
        if step.still_moving:
            moving.add(step.member)
    with svc.session() as session:
        report.members = session.scalars(select(func.count()).select_from(Member)).one()
    for host in _hosts_to_check(svc):
        if host is None or host.url is None:
            _reconcile_host(svc, report, host, moving, dry_run, provisioning_grace)  # raises when down
            continue
        try:
            _reconcile_host(services_for(svc, host), report, host, moving, dry_run, provisioning_grace)
        except LabgpuError as exc:
            report.actions.append(
                Action(host.name, NOTE, f"host {host.name} could not be checked", error=exc.message)
            )

    _resume_applications(svc, report, dry_run, provisioning_grace)
    if report.changed:
        with svc.session() as session:
            svc.audit(
                session,
                "reconcile",
                None,
                actions=[a.as_dict() for a in report.actions if a.done],
            )
    return report


def _resume_applications(
    svc: Services, report: ReconcileReport, dry_run: bool, grace: timedelta | None
) -> None:
    """Provision approved applications nobody is working on: the portal that approved them is down, or
    died mid-way (it resumes them itself when it starts). With ``grace``, only those whose progress has
    not moved for that long (the portal's own worker may be on the others)."""
    with svc.session() as session:
        query = select(Application.id, Application.name).where(
            Application.status == ApplicationStatus.APPROVED
        )
        if grace is not None:
            query = query.where(Application.updated_at < utcnow() - grace)
        waiting = list(session.execute(query.order_by(Application.id)).tuples())
    for application_id, name in waiting:
        detail = f"provision approved application {application_id} (the portal did not finish it)"
        if dry_run:
            report.actions.append(Action(name, APPLICATION, detail))
            continue
        info = portal.provision_application(svc, application_id)
        if info.status == ApplicationStatus.DONE:
            report.actions.append(Action(name, APPLICATION, detail, done=True))
        else:
            report.actions.append(Action(name, APPLICATION, detail, error=info.progress or info.status))


def _hosts_to_check(svc: Services) -> list[Host | None]:
    """The local host (always: it reports foreign and orphan instances) and every other host that has
    members. None stands for a local daemon that has no host row yet."""
    with svc.session() as session:
        local = recorded_local_host(session)
        others = session.scalars(
            select(Host)
            .where(
                Host.url.is_not(None), Host.id.in_(select(Member.host_id).where(Member.host_id.is_not(None)))
            )
            .order_by(Host.name)
        ).all()
    return [local, *others]


def _reconcile_host(
    svc: Services,
    report: ReconcileReport,
    host: Host | None,
    moving: set[str],
    dry_run: bool,
    provisioning_grace: timedelta | None,
) -> None:
    """Reconcile the members of one host (``svc`` talks to its daemon) and report what else runs there."""
    desired, roots = _read_desired(svc, report, host, moving)
    listed = svc.runtime.instances.all(with_state=False)
    target = svc.runtime.target
    # A cluster lists every member's instances: members' containers are looked up among all of them,
    # but only the instances on this member are reported as foreign or orphans.
    instances = {i.name: i for i in listed}
    here = {i.name: i for i in listed if target is None or i.location == target}
    report.instances += len(here)
    cli = "incus" if svc.runtime.server().kind == "incus" else "lxc"

    claimed: set[str] = set()
    for want in desired:
        if want.spec is not None:
            claimed.add(want.spec.name)
        try:
            _reconcile_member(svc, report, want, instances, roots, dry_run, provisioning_grace)
        except LabgpuError as exc:
            report.actions.append(Action(want.name, NOTE, "could not be checked", error=exc.message))
    if not dry_run:
        _sync_mirrors(svc, report, desired, instances)

    with svc.session() as session:
        member_names = set(session.scalars(select(Member.name)))
    for inst in sorted(here.values(), key=lambda i: i.name):
        if inst.name in claimed:
            continue
        owner = inst.label("owner")
        if owner in moving:
            continue  # its move's action above says what it is
        if owner is None:
            report.actions.append(
                Action(inst.name, FOREIGN, "not labgpu's (no user.labgpu.owner): ignored, never changed")
            )
            continue
        why = (
            f"labeled as {owner}'s, but {owner}'s container is another one"
            if owner in member_names
            else f"labeled as {owner}'s, but there is no member {owner}"
        )
        report.actions.append(
            Action(
                inst.name,
                ORPHAN,
                f"{why}: left alone. Keep what you need from it, then remove it by hand: "
                f"`{cli} delete --force {inst.name}`",
            )
        )


def _read_desired(
    svc: Services, report: ReconcileReport, host: Host | None, moving: set[str]
) -> tuple[list[_Desired], list[str]]:
    """The members of ``host`` (the local host also takes the members not placed yet), except those
    whose move is still unresolved."""
    gpus_on_host: dict[int, str] | None = None
    out: list[_Desired] = []
    local = host is None or host.url is None
    host_id = host.id if host is not None else None
    with svc.session() as session:
        rows = session.scalars(
            select(Member)
            .order_by(Member.name)
            .options(
                selectinload(Member.port_maps),
                selectinload(Member.shares),
                selectinload(Member.host),
            )
        ).all()
        for row in rows:
            mine = row.host_id == host_id or (local and row.host_id is None)
            if not mine or row.name in moving:
                continue
            spec = None
            if row.uid is not None and row.container is not None:
                if gpus_on_host is None:
                    gpus_on_host = members_svc.host_gpus(svc.runtime)
                spec = members_svc.container_spec(svc, row, gpus_on_host=gpus_on_host)
            out.append(_Desired(row.name, row.state, spec, row.updated_at))
        roots = members_svc.allowed_roots(svc, session)
    return out, roots


def _is_members(inst: Instance, spec: ContainerSpec) -> bool:
    """Is ``inst`` this member's container?

    Its owner key says so; or, when the key was lost, its home device mounts this
    member's own home folder, which only labgpu sets up."""
    owner = inst.label("owner")
    if owner is not None:
        return owner == spec.owner
    home = inst.devices.get("labgpu-home") or {}
    return home.get("type") == "disk" and home.get("source") == spec.home_source


def _reconcile_member(
    svc: Services,
    report: ReconcileReport,
    want: _Desired,
    instances: Mapping[str, Instance],
    roots: list[str],
    dry_run: bool,
    grace: timedelta | None,
) -> None:
    add = report.actions.append
    name, spec = want.name, want.spec
    if want.state == MemberState.REMOVING:
        _finish_removal(svc, report, name, dry_run)
        return
    if spec is None:
        return
    inst = instances.get(spec.name)
    if inst is not None and not _is_members(inst, spec):
        owner = inst.label("owner")
        whose = f"labeled as {owner}'s" if owner else "not labgpu's"
        add(
            Action(
                name,
                CONFLICT,
                f"an instance named {spec.name} exists and is {whose}: left alone; rename or remove it "
                f"by hand, then run `labgpu reconcile` again",
            )
        )
        return

    if want.state == MemberState.PROVISIONING:
        if grace is not None and utcnow() - want.updated_at < grace:
            add(Action(name, SKIP, "provisioning started moments ago (member add may still be running)"))
            return
        if inst is not None:
            _repair_drift(svc, report, name, spec, inst, roots, dry_run)
        _run(
            report,
            name,
            PROVISION,
            _provisioning_detail(svc, spec, inst),
            dry_run,
            lambda: members_svc.provision(svc, name),
        )
        return

    if inst is None:
        home = spec.home_source
        detail = (
            f"container {spec.name} is missing: recreate it from {spec.template}, "
            f"home {home} kept; {_password_note(svc, name)}"
        )
        if want.state == MemberState.STOPPED:
            detail += "; left stopped afterwards"

        def recreate() -> None:
            members_svc.provision(svc, name)
            if want.state == MemberState.STOPPED:
                # Freshly made, nothing to lose: no need to wait for a clean shutdown.
                svc.runtime.instances.stop(spec.name, force=True)

        _run(report, name, RECREATE, detail, dry_run, recreate)
        return

    _repair_drift(svc, report, name, spec, inst, roots, dry_run)
    if want.state == MemberState.RUNNING and inst.status != "Running":
        if inst.status == "Frozen":
            _run(
                report,
                name,
                START,
                f"container {spec.name} is frozen: unfreeze it",
                dry_run,
                lambda: svc.runtime.instances.set_state(spec.name, "unfreeze"),
            )
        else:
            _run(
                report,
                name,
                START,
                f"container {spec.name} is {inst.status.lower() or 'not running'}: start it",
                dry_run,
                lambda: members_svc.ensure_running(svc.runtime, spec.name),
            )
    elif want.state == MemberState.STOPPED and inst.status == "Running":
        add(
            Action(
                name,
                NOTE,
                f"{spec.name} runs although the member is stopped: left running "
                f"(`labgpu member stop {name}` stops it)",
            )
        )


def _repair_drift(
    svc: Services,
    report: ReconcileReport,
    name: str,
    spec: ContainerSpec,
    inst: Instance,
    roots: list[str],
    dry_run: bool,
) -> None:
    """Put back labgpu's config keys and devices on an existing container, in ONE update."""
    config_changes, config_lines = _config_drift(spec.config(), inst.config)
    device_changes, device_lines = _device_drift(spec.devices(), inst.devices)
    if not config_changes and not device_changes:
        return
    check_safe(spec.config(), spec.devices(), allowed_roots=roots)
    if inst.status == "Running":
        # The daemon applies a new uid map only when the container starts.
        config_lines = [
            line + " (takes effect at the next restart)" if line.startswith("set raw.idmap=") else line
            for line in config_lines
        ]

    def update() -> None:
        svc.runtime.instances.update(spec.name, config=config_changes, devices=device_changes)

    actions = [(CONFIG, line) for line in config_lines] + device_lines
    # One request carries every change; the report lists them one by one.
    first, *rest = actions
    _run(report, name, first[0], first[1], dry_run, update)
    failed = report.actions[-1].error
    for kind, line in rest:
        report.actions.append(Action(name, kind, line, done=not dry_run and failed is None, error=failed))


def _config_drift(
    want: Mapping[str, str], have: Mapping[str, str]
) -> tuple[dict[str, str | None], list[str]]:
    changes: dict[str, str | None] = {}
    lines: list[str] = []
    for key, value in want.items():
        if have.get(key) != value:
            changes[key] = value
            was = "missing" if key not in have else f"was {have[key]!r}"
            lines.append(f"set {key}={value!r} ({was})")
    for key in _MANAGED_OPTIONAL_KEYS:
        if key not in want and key in have:
            changes[key] = None
            lines.append(f"remove {key} (was {have[key]!r}; the member has the policy default)")
    return changes, lines


def _device_drift(
    want: Mapping[str, Mapping[str, str]], have: Mapping[str, Mapping[str, str]]
) -> tuple[dict[str, dict[str, str] | None], list[tuple[str, str]]]:
    changes: dict[str, dict[str, str] | None] = {}
    lines: list[tuple[str, str]] = []
    for dev, spec in want.items():
        current = have.get(dev)
        if current is None:
            changes[dev] = dict(spec)
            lines.append((DEVICE, f"add missing device {dev} ({_describe(spec)})"))
        elif dict(current) != dict(spec):
            changes[dev] = dict(spec)
            lines.append((DEVICE, f"restore device {dev} ({_describe(spec)}; was {_describe(current)})"))
    for dev in have:
        if dev not in want and _managed_device(dev, have[dev]):
            changes[dev] = None
            lines.append((REMOVE_DEVICE, f"remove stale device {dev} ({_describe(have[dev])})"))
    return changes, lines


def _managed_device(name: str, device: Mapping[str, str]) -> bool:
    # The same rule as `member set` (services.lifecycle): a root disk is labgpu's only when it
    # carries the size labgpu gave it.
    if name.startswith(_MANAGED_DEVICE_PREFIXES):
        return True
    return name == "root" and device.get("path") == "/" and "size" in device


def _describe(dev: Mapping[str, str]) -> str:
    kind = dev.get("type", "?")
    if kind == "proxy":
        return f"proxy {dev.get('listen', '?')} -> {dev.get('connect', '?')}"
    if kind == "disk":
        source = dev.get("source") or f"pool {dev.get('pool', '?')}"
        extra = ", read-only" if dev.get("readonly") == "true" else ""
        size = f", {dev['size']}" if "size" in dev else ""
        return f"disk {source} at {dev.get('path', '?')}{extra}{size}"
    return ", ".join(f"{k}={v}" for k, v in sorted(dev.items()))


def _provisioning_detail(svc: Services, spec: ContainerSpec, inst: Instance | None) -> str:
    todo = []
    if not members_svc.home_dir(svc, spec.owner).is_dir():
        todo.append("create the home folder")
    if inst is None:
        todo.append(f"create container {spec.name}")
    if inst is None or inst.status != "Running":
        todo.append("start it")
    todo.append("wait for sshd, set a password, install the SSH keys")
    return f"finish provisioning ({', '.join(todo)}); {_password_note(svc, spec.owner)}"


def _password_note(svc: Services, name: str) -> str:
    if members_svc.list_keys(svc, name):
        return "the member logs in with their SSH key (no password is set)"
    return f"a new initial password is set but not shown: hand one over with `labgpu member passwd {name}`"


def _sync_mirrors(
    svc: Services, report: ReconcileReport, desired: Sequence[Any], instances: Mapping[str, Instance]
) -> None:
    """Running containers' package mirror files follow the settings; the member's own edits stay."""
    for want in desired:
        inst = instances.get(want.spec.name) if want.spec is not None else None
        if inst is None or inst.status != "Running" or inst.label("owner") != want.name:
            continue
        try:
            changes = members_svc.apply_mirrors(svc, inst.name)
        except LabgpuError as exc:
            report.actions.append(Action(want.name, NOTE, "package mirrors not checked", error=exc.message))
            continue
        if changes:
            done = ", ".join(f"{c.path} {c.action}" for c in changes)
            report.actions.append(Action(want.name, MIRRORS, f"package mirrors: {done}", done=True))


def _run(
    report: ReconcileReport,
    member: str,
    action: str,
    detail: str,
    dry_run: bool,
    fn: Callable[[], object],
) -> None:
    if dry_run:
        report.actions.append(Action(member, action, detail, done=False))
        return
    try:
        fn()
    except LabgpuError as exc:
        report.actions.append(Action(member, action, detail, done=False, error=exc.message))
        return
    report.actions.append(Action(member, action, detail, done=True))


def _finish_removal(svc: Services, report: ReconcileReport, name: str, dry_run: bool) -> None:
    """Finish a `member rm` that stopped half-way."""
    _run(
        report,
        name,
        FINISH_REMOVAL,
        "finish the removal (container deleted, ports freed, home archived as `member rm` does)",
        dry_run,
        lambda: members_svc.finish_removal(svc, name),
    )
