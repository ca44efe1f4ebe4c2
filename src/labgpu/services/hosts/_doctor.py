"""`labgpu doctor`: check every prerequisite and say how to fix what fails.

Each check answers ok / fail / warn / n-a with a detail and a fix. ``critical`` checks are the ones
labgpu cannot work without; the command exits 0 only when none of them fails. GPU checks are
``n-a`` on a host without an NVIDIA GPU. Checks read the filesystem under an injectable root (see
:class:`~labgpu.services.hosts._setup.HostPaths`) so tests can fake a GPU host in a folder.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labgpu.domain.subid import clash_with_container_map, missing_ranges, parse_subid
from labgpu.errors import LabgpuError
from labgpu.gpu import nvml
from labgpu.runtime.client import RuntimeClient, ServerInfo
from labgpu.services.hosts._daemon import daemon_restart_hint
from labgpu.services.hosts._doctor_checks import (
    Check,
    CheckStatus,
    host_tool_checks,
    portal_tls_check,
    which_anywhere,
)
from labgpu.services.hosts._doctor_checks import fail as _fail
from labgpu.services.hosts._doctor_checks import na as _na
from labgpu.services.hosts._doctor_checks import ok as _ok
from labgpu.services.hosts._doctor_checks import warn as _warn
from labgpu.services.hosts._doctor_network import container_network_checks, profile_nic_check
from labgpu.services.hosts._profile import FORBIDDEN_PROFILE_CONFIG
from labgpu.services.hosts._setup import (
    HostPaths,
    clash_advice,
    runtime_label,
)
from labgpu.settings import Settings
from labgpu.system.sysctl import KERNEL_LIMITS, read_kernel_limits, sysctl_name

# API extensions the runtime code relies on (both LXD 5.0 and Incus 6.0 have them all).
REQUIRED_EXTENSIONS: dict[str, str] = {
    "instances": "the instances API",
    "projects": "projects",
    "storage": "storage pools",
    "network": "networks",
    "container_exec_recording": "exec with record-output",
    "directory_manipulation": "creating folders through the files API",
    "file_delete": "deleting files through the files API",
    "proxy": "proxy devices (port maps)",
    "gpu_devices": "gpu devices",
    "id_map": "raw.idmap for homes",
    "resources_gpu": "GPU inventory in the resources API",
}
MIN_VERSIONS = {"lxd": (5, 0), "incus": (6, 0)}
NO_GPU = "no NVIDIA GPU found (lspci / /proc/driver/nvidia)"
UVM_FIX = (
    "run `nvidia-modprobe -u -c=0` (loads nvidia-uvm and creates /dev/nvidia-uvm and /dev/nvidia-uvm-tools); "
    "after every reboot they are missing until it runs, so run it at boot (a systemd oneshot unit or rc.local)"
)
NVIDIA_PCI_VENDOR = "0x10de"
DISPLAY_CLASSES = ("0x0300", "0x0302")  # VGA controller, 3D controller


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    runtime: str = ""  # "LXD 5.0.2 at /var/lib/lxd/unix.socket" once reached
    runtime_error: LabgpuError | None = None  # why the daemon could not be reached

    @property
    def failed_critical(self) -> list[Check]:
        return [c for c in self.checks if c.critical and c.status == CheckStatus.FAIL]

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_critical else 0

    def to_list(self) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.checks]


def parse_version(text: str) -> tuple[int, ...]:
    """(5, 0, 2) from "5.0.2", (6, 0) from "6.0 LTS"; () when there is no number."""
    m = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    return tuple(int(p) for p in m.group(1).split(".")) if m else ()


# Daemon ----------------------------------------------------------------------


def daemon_checks(server: ServerInfo, where: str) -> list[Check]:
    """Kind, version and API extensions of a daemon that answered."""
    checks: list[Check] = []
    minimum = MIN_VERSIONS.get(server.kind, (0,))
    version = parse_version(server.version)
    needed = ".".join(str(p) for p in minimum)
    if version >= minimum:
        checks.append(
            _ok("daemon-version", f"{server.label} {server.version} (labgpu needs {needed} or later)")
        )
    else:
        checks.append(
            _fail(
                "daemon-version",
                f"{server.label} {server.version or '(unknown version)'} is older than {needed}",
                f"upgrade to {server.label} {needed} LTS or later",
            )
        )
    missing = sorted(set(REQUIRED_EXTENSIONS) - server.api_extensions)
    if missing:
        what = ", ".join(f"{m} ({REQUIRED_EXTENSIONS[m]})" for m in missing)
        checks.append(
            _fail(
                "api-extensions",
                f"{server.label} at {where} lacks API extensions: {what}",
                f"upgrade to {server.label} {needed} LTS or later",
            )
        )
    else:
        checks.append(
            _ok("api-extensions", f"all {len(REQUIRED_EXTENSIONS)} API extensions labgpu uses are there")
        )
    return checks


def resource_checks(runtime: RuntimeClient, settings: Settings) -> list[Check]:
    """Storage pool, network and profile that `host init` makes."""
    checks: list[Check] = []
    init = "run `labgpu host init`"
    pool = runtime.storage_pools.find(settings.storage_pool)
    if pool is None:
        checks.append(_fail("storage-pool", f"storage pool {settings.storage_pool} does not exist", init))
    elif pool.status and pool.status.lower() != "created":
        checks.append(
            _fail(
                "storage-pool",
                f"storage pool {pool.name} ({pool.driver}) is {pool.status}",
                "see the daemon's log; `lxc storage show` / `incus storage show` names the problem",
            )
        )
    else:
        checks.append(_ok("storage-pool", f"storage pool {pool.name} ({pool.driver})"))

    mode = settings.network_mode
    if mode == "none":
        checks.append(
            _na("network", "network_mode is none: containers get no NIC (SSH through proxy devices)")
        )
    else:
        net = runtime.networks.find(settings.network_name)
        if net is None:
            checks.append(_fail("network", f"{mode} network {settings.network_name} does not exist", init))
        elif not net.managed or net.type != mode:
            kind = "an unmanaged interface" if not net.managed else f"a {net.type} network"
            checks.append(
                _fail(
                    "network",
                    f"{settings.network_name} is {kind}, not a {mode} network",
                    "set network_name to a free name and run `labgpu host init`",
                )
            )
        else:
            where = net.config.get("ipv4.address") or net.config.get("parent") or ""
            checks.append(_ok("network", f"{mode} network {net.name}" + (f" ({where})" if where else "")))

    profile = runtime.profiles.find(settings.profile_name)
    if profile is None:
        checks.append(_fail("profile", f"profile {settings.profile_name} does not exist", init))
    else:
        bad = [k for k, v in FORBIDDEN_PROFILE_CONFIG.items() if profile.config.get(k, "").lower() == v]
        root = profile.devices.get("root", {})
        if bad:
            checks.append(
                _fail(
                    "profile",
                    f"profile {profile.name} sets {', '.join(bad)}: labgpu containers must be unprivileged",
                    f"lxc profile unset {profile.name} {bad[0]} (incus: incus profile unset ...)",
                )
            )
        elif root.get("pool") != settings.storage_pool:
            have = root.get("pool") or "no root disk"
            checks.append(
                _fail(
                    "profile",
                    f"profile {profile.name} has {have} where labgpu expects pool {settings.storage_pool}",
                    "run `labgpu host init --force` to put labgpu's settings back into the profile",
                )
            )
        else:
            checks.append(_ok("profile", f"profile {profile.name} (root disk on {settings.storage_pool})"))
    return checks


# Host files ---------------------------------------------------------------------


def subid_checks(settings: Settings, paths: HostPaths, restart_hint: str) -> list[Check]:
    """root may map the members' uid range (raw.idmap fails at container start otherwise)."""
    checks: list[Check] = []
    wanted = f"root:{settings.uid_base}:{settings.uid_count}"
    for kind, path in (("subuid", paths.subuid), ("subgid", paths.subgid)):
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        except OSError as exc:
            checks.append(
                _fail(kind, f"cannot read {path}: {exc.strerror or exc}", "run labgpu doctor as root")
            )
            continue
        ranges = parse_subid(text)
        clash = clash_with_container_map(ranges, start=settings.uid_base, count=settings.uid_count)
        missing = missing_ranges(ranges, owner="root", start=settings.uid_base, count=settings.uid_count)
        if clash is not None:
            advice = clash_advice(clash, start=settings.uid_base, count=settings.uid_count)
            detail, _, fix = advice.partition(": ")
            checks.append(
                _fail(kind, f"{path}: {detail}", f"{fix}, then run `labgpu host init` and restart the daemon")
            )
        elif missing:
            checks.append(
                _fail(
                    kind,
                    f"{path} does not give root {', '.join(str(r) for r in missing)} (members' home uids)",
                    f"run `labgpu host init` (adds {wanted}), then restart the daemon: {restart_hint}",
                )
            )
        else:
            checks.append(_ok(kind, f"{path} covers {wanted}"))
    return checks


# Kernel limits (LXD's and Incus's production setup guides; `host init` raises them) -----------------

# Below this many inotify instances a lab's containers cannot all run (about 128 containers at 8 each).
INOTIFY_INSTANCES_NEEDED = 1024


def kernel_limit_checks(paths: HostPaths) -> list[Check]:
    """The sysctls LXD's and Incus's production guides raise, read from /proc/sys.

    Fails (not critically: a few containers still run) when fs.inotify.max_user_instances is below
    INOTIFY_INSTANCES_NEEDED; warns when any of them is lower than the guides' values."""
    found = read_kernel_limits(paths.proc_sys)
    if not found:
        return [_na("kernel-limits", f"cannot read {paths.proc_sys} (not Linux, or /proc not mounted)")]
    low = {k: v for k, v in found.items() if v < KERNEL_LIMITS[k]}
    fix = "run `labgpu host init` (it raises them now and at every boot), or as root: " + "; ".join(
        f"sysctl -w {sysctl_name(k)}={KERNEL_LIMITS[k]}" for k in low
    )
    instances = found.get("fs/inotify/max_user_instances")
    if instances is not None and instances < INOTIFY_INSTANCES_NEEDED:
        return [
            _fail(
                "kernel-limits",
                f"fs.inotify.max_user_instances is {instances}: only about {max(instances // 8, 1)} "
                "containers can run at once (the next one's init dies with 'Too many open files')",
                fix,
                critical=False,
            )
        ]
    if low:
        what = ", ".join(f"{sysctl_name(k)}={v} (guide: {KERNEL_LIMITS[k]})" for k, v in low.items())
        return [_warn("kernel-limits", f"below the production guide: {what}", fix)]
    return [_ok("kernel-limits", "inotify and map-count limits as the production guide says", critical=False)]


def state_dir_check(settings: Settings) -> Check:
    path = settings.state_dir
    if path.is_dir():
        if os.access(path, os.W_OK | os.X_OK):
            return _ok("state-dir", f"{path} is writable")
        return _fail(
            "state-dir",
            f"{path} is not writable by this user",
            f"run labgpu as the user that owns {path}, or fix its owner (chown)",
        )
    if path.exists():
        return _fail("state-dir", f"{path} is not a folder", "set LABGPU_STATE_DIR to a folder")
    parent = next((p for p in path.parents if p.exists()), Path("/"))
    if os.access(parent, os.W_OK | os.X_OK):
        return _warn("state-dir", f"{path} does not exist yet (labgpu creates it)", "run `labgpu db upgrade`")
    return _fail(
        "state-dir",
        f"{path} does not exist and {parent} is not writable",
        f"mkdir -p {path} as root and give it to the labgpu user, or set LABGPU_STATE_DIR",
    )


def database_check(settings: Settings) -> Check:
    """The store answers ``SELECT 1`` (SQLite: only when its file exists; doctor creates nothing)."""
    try:
        db: Any = importlib.import_module("labgpu.store.db")
    except ImportError:
        db = None
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        path = settings.state_dir / "labgpu.db" if settings.database_url is None else None
        if db is not None:
            try:
                path = db.sqlite_path(db.database_url(settings))
            except LabgpuError as exc:
                return _fail("database", exc.message, exc.hint or "fix database_url")
        if path is not None and not path.exists():
            folder_ok = os.access(next((p for p in path.parents if p.exists()), Path("/")), os.W_OK)
            if folder_ok:
                return _warn(
                    "database", f"SQLite database {path} does not exist yet", "run `labgpu db upgrade`"
                )
            return _fail(
                "database",
                f"SQLite database {path} does not exist and its folder is not writable",
                "set LABGPU_STATE_DIR to a folder labgpu can write",
            )
    if db is None:
        return _warn("database", "the store module is not available in this build", "reinstall labgpu")
    try:
        import sqlalchemy as sa

        engine = db.create_engine_for(settings)
        try:
            with db.connect(engine) as conn:
                conn.execute(sa.text("SELECT 1"))
            schema = _schema_problem(engine)
        finally:
            engine.dispose()
    except LabgpuError as exc:
        return _fail("database", exc.message, exc.hint or "check database_url and that the server runs")
    except Exception as exc:
        return _fail("database", f"the database does not answer: {exc}", "check database_url")
    describe = getattr(db, "describe_url", str)
    if schema:
        # `labgpu serve` upgrades by itself at start-up; other commands ask for it.
        return _warn("database", schema, "run `labgpu db upgrade`")
    return _ok("database", f"{describe(url)} answers")


def _schema_problem(engine: Any) -> str:
    """Why the schema is not at this labgpu's revision; "" when it is (or cannot be told)."""
    try:
        migrate: Any = importlib.import_module("labgpu.store.migrate")
    except ImportError:
        return ""
    try:
        migrate.require_current(engine)
    except LabgpuError as exc:
        return exc.message.removesuffix(": run `labgpu db upgrade`")
    return ""


# GPUs ------------------------------------------------------------------------------


def nvidia_pci_devices(paths: HostPaths) -> list[str]:
    """PCI addresses of NVIDIA display/3D controllers (what `lspci -d 10de:` shows)."""
    out: list[str] = []
    for dev in sorted((paths.sys / "bus/pci/devices").glob("*")):
        try:
            vendor = (dev / "vendor").read_text().strip().lower()
            klass = (dev / "class").read_text().strip().lower()
        except OSError:
            continue
        if vendor == NVIDIA_PCI_VENDOR and klass.startswith(DISPLAY_CLASSES):
            out.append(dev.name)
    return out


def _driver_version(paths: HostPaths) -> str | None:
    try:
        text = (paths.proc / "driver/nvidia/version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
    return m.group(1) if m else (text.splitlines()[0].strip() if text.strip() else "unknown version")


def gpu_checks(
    paths: HostPaths,
    *,
    probe: Callable[[], nvml.NvmlProbe] = nvml.probe,
    which: Callable[[str], str | None] = shutil.which,
) -> list[Check]:
    """Driver, device nodes, NVML and nvidia-container-cli; all n-a without an NVIDIA GPU."""
    names = ("nvidia-driver", "nvidia-devices", "nvidia-uvm", "nvml", "nvidia-container-cli")
    pci = nvidia_pci_devices(paths)
    driver = _driver_version(paths)
    if not pci and driver is None:
        return [_na(name, NO_GPU) for name in names]

    checks: list[Check] = []
    if driver is None:
        checks.append(
            _fail(
                "nvidia-driver",
                f"{len(pci)} NVIDIA GPU(s) on the PCI bus but no driver loaded (/proc/driver/nvidia/version missing)",
                "install the NVIDIA driver (apt install nvidia-driver, or NVIDIA's .run installer) and reboot",
            )
        )
    else:
        checks.append(_ok("nvidia-driver", f"NVIDIA driver {driver}"))

    gpus_dir = paths.proc / "driver/nvidia/gpus"
    expected = len(list(gpus_dir.glob("*"))) if gpus_dir.is_dir() else len(pci)
    nodes = sorted(
        (p.name for p in paths.dev.glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)),
        key=lambda n: int(n[6:]),
    )
    missing = [] if (paths.dev / "nvidiactl").exists() else ["/dev/nvidiactl"]
    if len(nodes) < expected:
        missing.append(f"/dev/nvidiaN ({len(nodes)} of {expected} present)")
    if missing:
        checks.append(
            _fail(
                "nvidia-devices",
                "missing " + ", ".join(missing),
                "run `nvidia-smi` once (or `nvidia-modprobe -c=N` for each GPU N) to create the device "
                "nodes; if that fails the driver is not loaded (modprobe nvidia)",
            )
        )
    else:
        checks.append(_ok("nvidia-devices", "/dev/nvidiactl and " + ", ".join(f"/dev/{n}" for n in nodes)))

    uvm_missing = [f"/dev/{n}" for n in ("nvidia-uvm", "nvidia-uvm-tools") if not (paths.dev / n).exists()]
    if uvm_missing:
        checks.append(
            _fail(
                "nvidia-uvm",
                f"missing {', '.join(uvm_missing)}: CUDA in containers fails (torch.cuda.is_available() is False)",
                UVM_FIX,
            )
        )
    else:
        checks.append(_ok("nvidia-uvm", "/dev/nvidia-uvm and /dev/nvidia-uvm-tools present"))

    result = probe()
    if not result.ok:
        checks.append(
            _fail(
                "nvml",
                result.detail,
                "labgpu reads GPUs through NVML: install the driver's userspace libraries "
                "(libnvidia-ml.so.1) and nvidia-ml-py",
            )
        )
    elif expected and result.gpu_count < expected:
        checks.append(
            _fail(
                "nvml",
                f"{result.detail}, but {expected} on the PCI bus: a GPU fell off the bus or is broken",
                "check `dmesg | grep -i xid` and `nvidia-smi`; a reboot usually brings it back",
            )
        )
    else:
        checks.append(_ok("nvml", result.detail))

    cli = which("nvidia-container-cli")
    if cli:
        checks.append(
            _ok(
                "nvidia-container-cli",
                f"{cli} (LXD/Incus nvidia.runtime can pass the driver in)",
                critical=False,
            )
        )
    else:
        checks.append(
            _warn(
                "nvidia-container-cli",
                "nvidia-container-cli not found: containers with nvidia.runtime=true will not start",
                "install libnvidia-container-tools (NVIDIA's package repository), or install the driver's "
                "userspace inside templates instead",
            )
        )
    return checks


# The whole run ------------------------------------------------------------------------


def run_doctor(
    settings: Settings,
    *,
    connect: Callable[[], RuntimeClient],
    paths: HostPaths | None = None,
    probe: Callable[[], nvml.NvmlProbe] = nvml.probe,
    which: Callable[[str], str | None] = which_anywhere,
) -> DoctorReport:
    """Run every check. ``connect`` builds the runtime client (it may raise: the daemon check fails).

    Never raises for a failed check; the report says what failed, and its exit_code is 1 when a
    critical check failed. Does not change anything on the host.
    """
    paths = paths or HostPaths()
    report = DoctorReport()
    server: ServerInfo | None = None
    runtime: RuntimeClient | None = None
    try:
        runtime = connect()
        server = runtime.server()
    except LabgpuError as exc:
        report.runtime_error = exc
        where = runtime.endpoint.describe() if runtime is not None else "auto-detected sockets"
        report.checks.append(_fail("daemon", exc.message, exc.hint or f"start the daemon at {where}"))
    skipped = "skipped: the daemon is not reachable"
    if runtime is not None and server is not None:
        report.runtime = runtime_label(runtime, server)
        if server.trusted:
            report.checks.append(_ok("daemon", f"{report.runtime} answers and trusts labgpu"))
        else:
            report.checks.append(
                _fail(
                    "daemon",
                    f"{report.runtime} answers but does not trust labgpu's client certificate",
                    "on the daemon: lxc config trust add <certificate> (incus config trust add-certificate)",
                )
            )
            skipped = "skipped: the daemon does not trust labgpu"
        report.checks += daemon_checks(server, runtime.endpoint.describe())
        if server.trusted:
            try:
                report.checks += resource_checks(runtime, settings)
                nic = profile_nic_check(runtime, settings)
                report.checks += [nic] if nic is not None else container_network_checks(runtime, settings)
            except LabgpuError as exc:
                report.checks.append(_fail("resources", exc.message, exc.hint or "see the daemon's log"))
    if server is None or not server.trusted:
        names = ["daemon-version", "api-extensions"] if server is None else []
        names += ["storage-pool", "network", "profile"]
        report.checks += [_na(n, skipped) for n in names]

    restart = daemon_restart_hint(server) if server else "restart lxd or incusd"
    report.checks += subid_checks(settings, paths, restart)
    report.checks += kernel_limit_checks(paths)
    report.checks.append(state_dir_check(settings))
    report.checks.append(database_check(settings))
    report.checks += gpu_checks(paths, probe=probe, which=which)
    report.checks += host_tool_checks(which)
    report.checks.append(portal_tls_check(settings))
    return report
