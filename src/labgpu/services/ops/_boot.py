"""`labgpu boot`: what a host needs after every start, before members log in.

The seeds' recurring failure after a reboot: ``/dev/nvidia-uvm`` (and sometimes ``/dev/nvidiaN``) is
not created until something loads the module and makes the node, so CUDA in every container fails
until someone runs a script by hand (seed 002's ``mknod``, seed 004's rc.local). Boot does, in order:

1. GPU device nodes: ``nvidia-modprobe`` for the driver, each GPU and UVM when it is installed, else
   ``modprobe nvidia-uvm`` and ``mknod`` from the majors in /proc/devices; on a host without an
   NVIDIA GPU nothing is done;
2. waits for the LXD/Incus daemon (it may start after labgpu);
3. reconciles: containers that should run are started, labgpu's devices (port maps) put back;
4. refreshes the login gateway's accounts and map when it is enabled.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labgpu.errors import LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeUnavailable
from labgpu.services import hosts
from labgpu.services.context import Services
from labgpu.services.hosts import HostPaths, nvidia_pci_devices
from labgpu.services.ops._reconcile import ReconcileReport, reconcile

NVIDIA_MAJOR = 195
NVIDIACTL_MINOR = 255
DEFAULT_WAIT = 120.0

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class DeviceReport:
    """What boot found and did about the NVIDIA device nodes."""

    gpus: int = 0
    actions: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _gpu_count(paths: HostPaths) -> int:
    gpus_dir = paths.proc / "driver/nvidia/gpus"
    if gpus_dir.is_dir():
        return len(list(gpus_dir.iterdir()))
    return len(nvidia_pci_devices(paths))


def char_majors(paths: HostPaths) -> dict[str, int]:
    """Character device majors by driver name, from /proc/devices."""
    majors: dict[str, int] = {}
    try:
        text = (paths.proc / "devices").read_text()
    except OSError:
        return majors
    section = ""
    for line in text.splitlines():
        if line.endswith(":"):
            section = line
            continue
        parts = line.split()
        if section.startswith("Character") and len(parts) == 2 and parts[0].isdigit():
            majors.setdefault(parts[1], int(parts[0]))
    return majors


def wanted_nodes(paths: HostPaths, count: int) -> dict[str, tuple[str, int]]:
    """The nodes a GPU host needs: name -> (driver in /proc/devices, minor)."""
    nodes = {"nvidiactl": ("nvidia", NVIDIACTL_MINOR)}
    nodes.update({f"nvidia{i}": ("nvidia", i) for i in range(count)})
    nodes["nvidia-uvm"] = ("nvidia-uvm", 0)
    nodes["nvidia-uvm-tools"] = ("nvidia-uvm", 1)
    return nodes


def _is_char(path: Path) -> bool:
    try:
        return stat.S_ISCHR(path.stat().st_mode)
    except OSError:
        return False


def ensure_gpu_devices(
    paths: HostPaths | None = None,
    *,
    dry_run: bool = False,
    run: Runner = _run,
    which: Callable[[str], str | None] = shutil.which,
    mknod: Callable[[Path, int, int, int], None] | None = None,
) -> DeviceReport:
    """Make sure /dev/nvidiactl, /dev/nvidiaN, /dev/nvidia-uvm and /dev/nvidia-uvm-tools exist on a host
    with NVIDIA GPUs. Uses nvidia-modprobe when installed (it loads the modules and makes the nodes with
    the driver's own numbers), then falls back to modprobe and mknod. Never raises: problems are reported.
    Does nothing on a host without an NVIDIA GPU."""
    paths = paths or HostPaths()
    report = DeviceReport()
    driver_loaded = (paths.proc / "driver/nvidia/version").exists()
    if not driver_loaded and not nvidia_pci_devices(paths):
        return report
    report.gpus = _gpu_count(paths)
    dev = paths.dev

    def missing() -> list[str]:
        return [n for n in wanted_nodes(paths, report.gpus) if not _is_char(dev / n)]

    def step(args: list[str]) -> None:
        report.actions.append(" ".join(args) + (" (dry run)" if dry_run else ""))
        if dry_run:
            return
        try:
            done = run(args)
        except (OSError, subprocess.SubprocessError) as exc:
            report.problems.append(f"{args[0]}: {exc}")
            return
        if done.returncode != 0:
            reason = (done.stderr or done.stdout or "").strip().splitlines()
            report.problems.append(f"{' '.join(args)}: {reason[-1] if reason else f'exit {done.returncode}'}")

    if missing():
        modprobe_nvidia = which("nvidia-modprobe")
        if modprobe_nvidia:
            step([modprobe_nvidia])
            for index in range(report.gpus):
                step([modprobe_nvidia, f"-c={index}"])
            step([modprobe_nvidia, "-u", "-c=0"])  # nvidia-uvm and its two nodes
        else:
            modprobe = which("modprobe")
            majors = char_majors(paths)
            if modprobe and "nvidia" not in majors and "nvidia-frontend" not in majors:
                step([modprobe, "nvidia"])
            if modprobe and "nvidia-uvm" not in majors:
                step([modprobe, "nvidia-uvm"])
    if missing() and not dry_run:
        majors = char_majors(paths)
        majors.setdefault("nvidia", majors.get("nvidia-frontend", NVIDIA_MAJOR))
        make = mknod or _mknod
        for name in missing():
            driver, minor = wanted_nodes(paths, report.gpus)[name]
            major = majors.get(driver)
            if major is None:
                report.problems.append(
                    f"/dev/{name}: the {driver} module is not loaded (no major in /proc/devices)"
                )
                continue
            try:
                make(dev / name, major, minor, 0o666)
                report.actions.append(f"mknod -m 666 /dev/{name} c {major} {minor}")
            except OSError as exc:
                report.problems.append(f"mknod /dev/{name}: {exc.strerror or exc}")
    elif missing():
        report.actions += [f"mknod /dev/{n} (dry run)" for n in missing()]
    wanted = wanted_nodes(paths, report.gpus)
    report.present = [f"/dev/{n}" for n in wanted if _is_char(dev / n)]
    report.missing = [f"/dev/{n}" for n in wanted if not _is_char(dev / n)]
    return report


def _mknod(path: Path, major: int, minor: int, mode: int) -> None:
    os.mknod(path, mode | stat.S_IFCHR, os.makedev(major, minor))
    path.chmod(mode)  # mknod applies the umask


def wait_for_daemon(runtime: RuntimeClient, *, timeout: float = DEFAULT_WAIT, interval: float = 1.0) -> float:
    """Wait until the daemon answers ``GET /1.0``; return the seconds waited. Raises RuntimeUnavailable
    (the last error) after ``timeout`` seconds."""
    start = time.monotonic()
    while True:
        try:
            runtime.close()  # a fresh connection: the socket may have been replaced by a restart
            runtime.server(refresh=True)
            return time.monotonic() - start
        except RuntimeUnavailable as exc:
            if time.monotonic() - start >= timeout:
                raise RuntimeUnavailable(
                    f"the daemon did not come up within {timeout:g}s: {exc.message}", hint=exc.hint
                ) from None
        except LabgpuError:
            # It answers, but not yet normally (e.g. still starting): keep waiting.
            if time.monotonic() - start >= timeout:
                raise
        time.sleep(interval)


@dataclass
class BootReport:
    devices: DeviceReport
    waited_seconds: float
    reconcile: ReconcileReport | None
    gateway: hosts.GatewayReport | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.problems or self.devices.problems or self.devices.missing) or bool(
            self.reconcile and self.reconcile.failures
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "devices": self.devices.as_dict(),
            "waited_seconds": round(self.waited_seconds, 1),
            "reconcile": self.reconcile.as_dict() if self.reconcile else None,
            "gateway": self.gateway.as_dict() if self.gateway else None,
            "problems": self.problems,
            "failed": self.failed,
        }


def boot(
    svc: Services,
    *,
    timeout: float = DEFAULT_WAIT,
    paths: HostPaths | None = None,
    devices: Callable[[], DeviceReport] | None = None,
) -> BootReport:
    """Device nodes, then wait for the daemon (up to ``timeout``), then reconcile, then the gateway.

    Raises RuntimeUnavailable when the daemon does not come up; every other problem is in the report
    (``failed``), so one bad container does not keep the others down."""
    device_report = devices() if devices is not None else ensure_gpu_devices(paths)
    waited = wait_for_daemon(svc.runtime, timeout=timeout)
    report = BootReport(devices=device_report, waited_seconds=waited, reconcile=None)
    try:
        report.reconcile = reconcile(svc)
    except LabgpuError as exc:
        report.problems.append(f"reconcile: {exc.message}")
    if hosts.gateway_enabled(svc.settings):
        try:
            report.gateway = hosts.sync_gateway(svc)
        except (LabgpuError, OSError) as exc:
            report.problems.append(f"login gateway: {exc}")
    return report
