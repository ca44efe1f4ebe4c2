"""`labgpu host init`: give a host what labgpu needs, creating only what is missing.

Steps, in order: the storage pool, the container network, the labgpu profile, and root's
subuid/subgid ranges (so that members' host uids can be mapped into containers with raw.idmap).
Each step looks first and reports ``unchanged`` when the thing is already there. Nothing that exists
is changed without ``force`` (and networks and pools never are: containers may be using them).
Everything that can be refused (bad settings, an unwritable /etc/subuid) is refused before the first
change, so a refused run leaves nothing half-made.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

from labgpu.domain.network import (
    DEFAULT_SUBNET_SEARCH,
    network_of,
    parse_bridge_address,
    parse_proc_net_route,
    pick_free_subnet,
)
from labgpu.domain.subid import SubidRange
from labgpu.errors import BadInput
from labgpu.runtime.client import RuntimeClient, ServerInfo
from labgpu.runtime.errors import OperationFailed, RuntimeBadRequest, RuntimeError_
from labgpu.services.hosts._daemon import daemon_restart_hint, reads_files, restart_for_subid
from labgpu.services.hosts._profile import (
    NIC_DEVICE,
    PORT_ISOLATION_EXTENSION,
    ProfileSpec,
    labgpu_profile,
    merged_profile,
    profile_diff,
)
from labgpu.settings import Settings
from labgpu.system.files import write_file_atomically
from labgpu.system.subid import SubidPlan, check_writable, plan_subid
from labgpu.system.sysctl import (
    KERNEL_LIMITS,
    SYSCTL_CONF_NAME,
    read_conf,
    read_kernel_limits,
    render_conf,
    sysctl_name,
    write_limits,
)

# Loop-file pools (btrfs, zfs without a disk) are sparse: this is a ceiling, not space taken now.
DEFAULT_POOL_SIZE = "20GiB"
AUTO_DRIVERS = ("btrfs", "zfs", "dir")
LOOP_DRIVERS = frozenset({"btrfs", "zfs"})


class StepStatus(StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    CHANGED = "changed"
    WOULD_CREATE = "would-create"
    WOULD_CHANGE = "would-change"
    NEEDS_ATTENTION = "needs-attention"


@dataclass(frozen=True)
class HostPaths:
    """Where host files are read and written; tests point these at a temporary folder.

    ``root`` is the filesystem root for /proc, /sys, /dev and /etc; subuid and subgid may be given
    on their own.
    """

    root: Path = Path("/")
    subuid_file: Path | None = None
    subgid_file: Path | None = None
    sysctl_root: Path | None = None  # where proc/sys and etc/sysctl.d are (default: root)

    @property
    def subuid(self) -> Path:
        return self.subuid_file or self.root / "etc/subuid"

    @property
    def subgid(self) -> Path:
        return self.subgid_file or self.root / "etc/subgid"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    @property
    def proc_sys(self) -> Path:
        return (self.sysctl_root or self.root) / "proc/sys"

    @property
    def sysctl_conf(self) -> Path:
        return (self.sysctl_root or self.root) / "etc/sysctl.d" / SYSCTL_CONF_NAME


@dataclass
class HostStep:
    """One step of host init: what it is about, what happened, and why."""

    step: str  # "storage pool", "network", "profile", "subuid", "subgid"
    target: str  # the pool/network/profile name or the file
    status: StepStatus
    detail: str
    diff: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "target": self.target,
            "status": str(self.status),
            "detail": self.detail,
            "diff": list(self.diff),
        }


@dataclass
class HostInitReport:
    """What `host init` did (or, with dry_run, would do)."""

    runtime: str  # "LXD 5.0.2 at /var/lib/lxd/unix.socket"
    dry_run: bool
    force: bool
    steps: list[HostStep] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things the admin must do, e.g. restart the daemon

    @property
    def changed(self) -> bool:
        return any(s.status in (StepStatus.CREATED, StepStatus.CHANGED) for s in self.steps)

    @property
    def nothing_to_change(self) -> bool:
        return all(s.status == StepStatus.UNCHANGED for s in self.steps)

    @property
    def needs_attention(self) -> list[HostStep]:
        return [s for s in self.steps if s.status == StepStatus.NEEDS_ATTENTION]

    def to_dict(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime,
            "dry_run": self.dry_run,
            "force": self.force,
            "nothing_to_change": self.nothing_to_change,
            "steps": [s.to_dict() for s in self.steps],
            "notes": list(self.notes),
        }


def runtime_label(runtime: RuntimeClient, server: ServerInfo | None = None) -> str:
    """How the daemon is named to people: "LXD 5.0.2 at /var/lib/lxd/unix.socket"."""
    server = server or runtime.server()
    return f"{server.label} {server.version} at {runtime.endpoint.describe()}"


# subuid / subgid -----------------------------------------------------------------


def clash_advice(clash: SubidRange, *, start: int, count: int) -> str:
    """What to tell the admin when the members' uid range lies inside the containers' own range."""
    below = clash.start - count
    suggestion = below if below >= 60000 else clash.end
    return (
        f"members' uids {start}-{start + count - 1} overlap {clash}, the range the daemon maps every "
        f"container's own uids to (a container's uid would own members' home files): set uid_base outside "
        f"{clash.start}-{clash.end - 1}, e.g. uid_base = {suggestion}"
    )


# The steps ----------------------------------------------------------------------------


@dataclass
class _Run:
    runtime: RuntimeClient
    settings: Settings
    server: ServerInfo
    report: HostInitReport
    force: bool
    dry_run: bool

    def add(
        self, step: str, target: str, status: StepStatus, detail: str, diff: list[str] | None = None
    ) -> None:
        self.report.steps.append(HostStep(step, target, status, detail, list(diff or [])))


def _storage_drivers(server: ServerInfo, wanted: str) -> list[str]:
    supported = [d.lower() for d in server.storage_drivers]
    if wanted != "auto":
        if supported and wanted not in supported:
            raise BadInput(
                f"storage_driver {wanted!r} is not available on this {server.label} "
                f"(available: {', '.join(supported)})",
                hint='set storage_driver = "auto" or one of the available drivers',
            )
        return [wanted]
    if not supported:  # an old daemon that does not say: dir always works
        return ["dir"]
    return [d for d in AUTO_DRIVERS if d in supported] or ["dir"]


def _pool_config(driver: str, pool_size: str) -> dict[str, str]:
    return {"size": pool_size} if driver in LOOP_DRIVERS else {}


def _describe_driver(driver: str, pool_size: str) -> str:
    if driver in LOOP_DRIVERS:
        return f"{driver} driver (sparse loop file, up to {pool_size})"
    return f"{driver} driver"


def _step_pool(run: _Run, drivers: list[str], pool_size: str) -> None:
    name = run.settings.storage_pool
    existing = run.runtime.storage_pools.find(name)
    if existing is not None:
        run.add("storage pool", name, StepStatus.UNCHANGED, f"exists ({existing.driver} driver)")
        return
    if run.dry_run:
        detail = f"would create with the {_describe_driver(drivers[0], pool_size)}"
        if len(drivers) > 1:
            detail += f"; falls back to {', then '.join(drivers[1:])} if that fails"
        run.add("storage pool", name, StepStatus.WOULD_CREATE, detail)
        return
    failures: list[str] = []
    for i, driver in enumerate(drivers):
        try:
            run.runtime.storage_pools.create(
                name,
                driver=driver,
                config=_pool_config(driver, pool_size),
                description="labgpu: container root filesystems",
            )
        except (RuntimeBadRequest, OperationFailed, RuntimeError_) as exc:
            if i == len(drivers) - 1:
                raise
            failures.append(f"{driver} failed ({exc.message})")
            continue
        detail = _describe_driver(driver, pool_size)
        if failures:
            detail += "; fell back to it because " + "; ".join(failures)
        run.add("storage pool", name, StepStatus.CREATED, detail)
        return


def _used_networks(run: _Run, paths: HostPaths) -> list[IPv4Network]:
    used: list[IPv4Network] = []
    with suppress(OSError):  # no /proc here: the daemon's networks are all we know
        used += parse_proc_net_route((paths.proc / "net/route").read_text())
    for net in run.runtime.networks.all():
        for key in ("ipv4.address", "ipv4.ovn.ranges"):
            value = network_of(net.config.get(key, ""))
            if value is not None:
                used.append(value)
    return used


def _step_bridge(
    run: _Run, paths: HostPaths, *, nat: bool, subnet: IPv4Interface | None, search: Sequence[IPv4Network]
) -> None:
    name = run.settings.network_name
    existing = run.runtime.networks.find(name)
    if existing is not None:
        if not existing.managed or existing.type != "bridge":
            kind = "an unmanaged host interface" if not existing.managed else f"a {existing.type} network"
            run.add(
                "network",
                name,
                StepStatus.NEEDS_ATTENTION,
                f"{name} exists as {kind}, not a bridge; set network_name to another name",
            )
            return
        address = existing.config.get("ipv4.address", "")
        if subnet is not None and network_of(address) != subnet.network:
            run.add(
                "network",
                name,
                StepStatus.NEEDS_ATTENTION,
                f"bridge has ipv4.address {address or 'unset'}, settings say {subnet}; labgpu does not "
                f"re-address a bridge containers may use: change it by hand "
                f"(lxc network set {name} ipv4.address={subnet}) or fix network_subnet",
            )
            return
        run.add("network", name, StepStatus.UNCHANGED, f"bridge exists ({address or 'no IPv4 address'})")
        return
    chosen = subnet or pick_free_subnet(_used_networks(run, paths), within=search)
    how = "given in settings" if subnet else "a free subnet"
    nat_text = "NAT on" if nat else "no NAT"
    if run.dry_run:
        run.add(
            "network",
            name,
            StepStatus.WOULD_CREATE,
            f"would create bridge {chosen} ({how}), {nat_text}, no IPv6",
        )
        return
    run.runtime.networks.create(
        name,
        type="bridge",
        config={
            "ipv4.address": str(chosen),
            "ipv4.nat": "true" if nat else "false",
            "ipv6.address": "none",
        },
        description="labgpu: container network",
    )
    run.add("network", name, StepStatus.CREATED, f"bridge {chosen} ({how}), {nat_text}, no IPv6")


def _step_macvlan(run: _Run, parent: str) -> None:
    name = run.settings.network_name
    existing = run.runtime.networks.find(name)
    if existing is not None:
        if not existing.managed or existing.type != "macvlan":
            kind = "an unmanaged host interface" if not existing.managed else f"a {existing.type} network"
            run.add(
                "network",
                name,
                StepStatus.NEEDS_ATTENTION,
                f"{name} exists as {kind}, not a macvlan network; set network_name to another name",
            )
            return
        have = existing.config.get("parent", "")
        if have != parent:
            run.add(
                "network",
                name,
                StepStatus.NEEDS_ATTENTION,
                f"macvlan network has parent {have or 'unset'}, settings say {parent}; change one of them",
            )
            return
        run.add("network", name, StepStatus.UNCHANGED, f"macvlan on {parent} exists")
        return
    if run.dry_run:
        run.add("network", name, StepStatus.WOULD_CREATE, f"would create macvlan on {parent}")
        return
    run.runtime.networks.create(
        name, type="macvlan", config={"parent": parent}, description="labgpu: container network"
    )
    run.add("network", name, StepStatus.CREATED, f"macvlan on {parent}")


def _step_profile(run: _Run) -> None:
    name = run.settings.profile_name
    desired = labgpu_profile(
        run.settings,
        pool=run.settings.storage_pool,
        port_isolation=run.server.has(PORT_ISOLATION_EXTENSION),
    )
    existing = run.runtime.profiles.find(name)
    if existing is None:
        if run.dry_run:
            run.add("profile", name, StepStatus.WOULD_CREATE, _describe_profile(desired, "would create: "))
            return
        run.runtime.profiles.create(
            name, config=desired.config, devices=desired.devices, description=desired.description
        )
        run.add("profile", name, StepStatus.CREATED, _describe_profile(desired, ""))
        return
    diff = profile_diff(existing, desired)
    if not diff:
        run.add("profile", name, StepStatus.UNCHANGED, "exists with labgpu's settings")
        return
    used = f"; used by {len(existing.used_by)} instance(s)" if existing.used_by else ""
    if not run.force:
        run.add(
            "profile",
            name,
            StepStatus.NEEDS_ATTENTION,
            f"differs from labgpu's settings{used}; run with --force to update it",
            diff,
        )
        return
    if run.dry_run:
        run.add("profile", name, StepStatus.WOULD_CHANGE, f"would update{used}", diff)
        return
    merged = merged_profile(existing, desired)
    run.runtime.profiles.replace(
        name, config=merged.config, devices=merged.devices, description=merged.description
    )
    run.add("profile", name, StepStatus.CHANGED, f"updated{used}", diff)


def _describe_profile(spec: ProfileSpec, prefix: str) -> str:
    parts = [f"root disk on pool {spec.devices['root']['pool']}", "autostart"]
    if NIC_DEVICE in spec.devices:
        parts.append(f"NIC {NIC_DEVICE} on {spec.devices[NIC_DEVICE]['network']}")
    return prefix + ", ".join(parts)


def _step_subid(run: _Run, plan: SubidPlan) -> bool:
    """Returns whether the file was (or would be) changed."""
    base, count = run.settings.uid_base, run.settings.uid_count
    wanted = f"root:{base}:{count}"
    if plan.clash is not None:
        advice = clash_advice(plan.clash, start=base, count=count)
        run.add(plan.kind, str(plan.path), StepStatus.NEEDS_ATTENTION, advice)
        return False
    if not plan.added:
        run.add(plan.kind, str(plan.path), StepStatus.UNCHANGED, f"{wanted} is covered")
        return False
    lines = ", ".join(str(r) for r in plan.added)
    if run.dry_run:
        run.add(plan.kind, str(plan.path), StepStatus.WOULD_CREATE, f"would add {lines}")
        return True
    write_file_atomically(plan.path, plan.new_text)
    run.add(plan.kind, str(plan.path), StepStatus.CREATED, f"added {lines}")
    return True


def _step_kernel_limits(run: _Run, paths: HostPaths) -> None:
    """Raise the kernel limits to the production guide's values, now (/proc/sys) and at every boot (a
    sysctl.d file). Only ever upwards: a value the admin set higher is kept, in the file too."""
    target = str(paths.sysctl_conf)
    found = read_kernel_limits(paths.proc_sys)
    if not found:
        run.add("kernel limits", target, StepStatus.UNCHANGED, f"{paths.proc_sys} cannot be read: left alone")
        return
    wanted = {k: max(v, KERNEL_LIMITS[k]) for k, v in found.items()}
    low = {k: v for k, v in found.items() if v < KERNEL_LIMITS[k]}
    text = render_conf(wanted)
    current_text = read_conf(paths.sysctl_conf)
    if not low and current_text == text:
        run.add("kernel limits", target, StepStatus.UNCHANGED, "as the production guide says, also at boot")
        return
    changes = [f"{sysctl_name(k)}: {v} -> {KERNEL_LIMITS[k]}" for k, v in low.items()]
    if current_text != text:
        changes.append(f"{target}: {'written' if current_text is None else 'rewritten'} (applied at boot)")
    if run.dry_run:
        run.add("kernel limits", target, StepStatus.WOULD_CHANGE, "would raise them", changes)
        return
    try:
        write_limits(
            paths.proc_sys,
            paths.sysctl_conf,
            text=text if current_text != text else None,
            now={key: KERNEL_LIMITS[key] for key in low},
        )
    except OSError as exc:
        fix = "; ".join(f"sysctl -w {sysctl_name(k)}={KERNEL_LIMITS[k]}" for k in low) or f"write {target}"
        run.add(
            "kernel limits",
            target,
            StepStatus.NEEDS_ATTENTION,
            f"cannot raise them here ({exc.strerror or exc}): as root on the host, {fix}",
            changes,
        )
        return
    run.add("kernel limits", target, StepStatus.CHANGED, "raised to the production guide's values", changes)


def init_host(
    runtime: RuntimeClient,
    settings: Settings,
    *,
    force: bool = False,
    dry_run: bool = False,
    nat: bool = True,
    pool_size: str = DEFAULT_POOL_SIZE,
    subnet_search: Sequence[IPv4Network] = DEFAULT_SUBNET_SEARCH,
    paths: HostPaths | None = None,
    restart_daemon: bool = True,
) -> HostInitReport:
    """Create what labgpu needs on the host and is missing: storage pool, network, profile,
    subuid/subgid ranges, and raise the kernel limits (inotify, map count). Idempotent: a second run reports every step unchanged.

    ``force`` updates a labgpu profile that differs from the settings (keeping keys the admin
    added); pools and networks that exist are never changed. ``dry_run`` changes nothing and
    reports what would be done. ``nat`` turns IPv4 NAT on for a new bridge. ``subnet_search`` is
    where a free bridge subnet is looked for when network_subnet is empty. When /etc/subuid or
    /etc/subgid changed, the daemon is restarted (``restart_daemon``; its instances keep running) and
    waited for, since it reads them at start only; where it cannot be, a step needs attention and says why.

    Raises BadInput for unusable settings (before anything is changed), LabgpuError when a subuid
    file cannot be written, RuntimeUnavailable when the daemon cannot be reached, and the runtime's
    typed errors when a create request fails. Waits for every background operation.
    """
    paths = paths or HostPaths()
    server = runtime.server()

    # Everything refusable is refused here, before the first change.
    drivers = _storage_drivers(server, settings.storage_driver)
    subnet: IPv4Interface | None = None
    parent = ""
    if settings.network_mode == "bridge" and settings.network_subnet:
        try:
            subnet = parse_bridge_address(settings.network_subnet)
        except ValueError as exc:
            raise BadInput(f"network_subnet: {exc}") from None
    if settings.network_mode == "macvlan":
        parent = (settings.network_parent or "").strip()
        if not parent:
            raise BadInput(
                "network_mode is macvlan but network_parent is not set",
                hint="set network_parent to the host interface containers should appear on (e.g. eno1)",
            )
        if "/" in parent or parent in (".", "..") or not (paths.sys / "class/net" / parent).exists():
            available = sorted(p.name for p in (paths.sys / "class/net").glob("*"))
            raise BadInput(
                f"network_parent {parent!r} is not a network interface of this host",
                hint=f"interfaces here: {', '.join(available) or 'none found'}",
            )
    plans = [
        plan_subid(kind, path, start=settings.uid_base, count=settings.uid_count)
        for kind, path in (("subuid", paths.subuid), ("subgid", paths.subgid))
    ]
    if not dry_run:
        for plan in plans:
            if plan.added:
                check_writable(plan.path)

    report = HostInitReport(runtime=runtime_label(runtime, server), dry_run=dry_run, force=force)
    run = _Run(runtime, settings, server, report, force=force, dry_run=dry_run)
    _step_pool(run, drivers, pool_size)
    if settings.network_mode == "bridge":
        _step_bridge(run, paths, nat=nat, subnet=subnet, search=subnet_search)
    elif settings.network_mode == "macvlan":
        _step_macvlan(run, parent)
    else:
        run.add("network", "-", StepStatus.UNCHANGED, "network_mode is none: containers get no NIC")
    _step_profile(run)
    subid_changed = [_step_subid(run, plan) for plan in plans]
    _step_kernel_limits(run, paths)
    if any(subid_changed):
        _step_daemon_restart(
            run,
            [p.path for p, changed in zip(plans, subid_changed, strict=True) if changed],
            restart=restart_daemon,
        )
    return report


def _step_daemon_restart(run: _Run, written: list[Path], *, restart: bool) -> None:
    """The daemon reads /etc/subuid and /etc/subgid at start only: restart it (keeping its instances) so
    that members' homes can be mapped at once, or say why not and how."""
    server, report = run.server, run.report
    daemon = "incusd" if server.kind == "incus" else "lxd"
    target = runtime_label(run.runtime, server)
    if run.dry_run or not restart or not reads_files(written):
        when = "after this runs, " if run.dry_run else ""
        why = "" if run.dry_run or restart else " (not done: --no-restart)"
        report.notes.append(
            f"{when}restart the daemon ({daemon}) for the new subuid/subgid range to take effect{why}: "
            f"{daemon_restart_hint(server)}"
        )
        return
    outcome = restart_for_subid(run.runtime, server)
    status = StepStatus.CHANGED if outcome.restarted else StepStatus.NEEDS_ATTENTION
    run.add("daemon restart", target, status, outcome.detail)
