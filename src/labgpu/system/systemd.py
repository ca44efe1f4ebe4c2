"""systemd: whether it runs, and the units for a host: the portal (`labgpu serve`), the GPU agent and the boot step.

`labgpu host install-services` writes three units:

- ``labgpu-boot.service`` (oneshot): after the LXD/Incus daemon and the NVIDIA modules, before the
  other two: device nodes, wait for the daemon, reconcile, gateway (see :mod:`labgpu.services.ops`);
- ``labgpu-serve.service``: the portal, JSON API and job runner, restarted on failure;
- ``labgpu-agent.service``: GPU inventory and Prometheus metrics for the portal.

Unit names the host does not have in ``After=``/``Wants=`` are harmless to systemd, so one set of
units fits LXD from the deb or the snap and Incus alike.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labgpu.errors import ConfigError

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
UNITS = ("labgpu-boot.service", "labgpu-serve.service", "labgpu-agent.service")
DAEMON_UNITS = "lxd.service lxd.socket snap.lxd.daemon.service incus.service incus.socket"


def systemd_running() -> bool:
    """Whether systemd is PID 1 (it is not in containers and on these development machines)."""
    return Path("/run/systemd/system").is_dir()


def labgpu_command() -> list[str]:
    """How systemd should start labgpu: the `labgpu` script beside this Python, else `python -m labgpu.cli`."""
    beside = Path(sys.executable).parent / "labgpu"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("labgpu")
    if found:
        return [str(Path(found).absolute())]
    return [sys.executable, "-m", "labgpu.cli"]


def _exec(command: list[str], config: Path | None, *args: str) -> str:
    words = [*command, *(["--config", str(config)] if config else []), *args]
    return " ".join(shlex.quote(w) for w in words)


def render_units(command: list[str], *, config: Path | None = None) -> dict[str, str]:
    """The three unit files, by name."""
    header = (
        "# Written by `labgpu host install-services`; run it again after moving labgpu.\n"
        "# What each step does: docs/admin/boot.md.\n"
    )
    boot = (
        f"{header}[Unit]\n"
        "Description=labgpu boot: GPU device nodes, wait for LXD/Incus, start members' containers\n"
        f"After={DAEMON_UNITS} network-online.target systemd-modules-load.service nvidia-persistenced.service\n"
        "Wants=network-online.target\n"
        "Before=labgpu-serve.service labgpu-agent.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={_exec(command, config, 'boot')}\n"
        "TimeoutStartSec=900\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )

    def long_running(what: str, sub: str) -> str:
        return (
            f"{header}[Unit]\n"
            f"Description=labgpu {what}\n"
            f"After=labgpu-boot.service {DAEMON_UNITS} network-online.target\n"
            "Wants=labgpu-boot.service network-online.target\n\n"
            "[Service]\n"
            f"ExecStart={_exec(command, config, sub)}\n"
            "Restart=on-failure\n"
            "RestartSec=5\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )

    return {
        "labgpu-boot.service": boot,
        "labgpu-serve.service": long_running("portal, JSON API and jobs (labgpu serve)", "serve"),
        "labgpu-agent.service": long_running("GPU agent: inventory and Prometheus metrics", "agent"),
    }


@dataclass
class InstallReport:
    unit_dir: Path
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    systemd: bool = False
    enabled: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["unit_dir"] = str(self.unit_dir)
        return out


def install_units(
    *,
    unit_dir: Path = DEFAULT_UNIT_DIR,
    config: Path | None = None,
    command: list[str] | None = None,
    enable: bool = True,
    start: bool = False,
) -> InstallReport:
    """Write the units into ``unit_dir`` (files that already say the same are left alone); when
    systemd runs (and ``enable``), reload it and enable them (``start``: and start them now).
    Raises ConfigError when the folder cannot be written or systemctl fails."""
    report = InstallReport(unit_dir=unit_dir)
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        for name, text in render_units(command or labgpu_command(), config=config).items():
            path = unit_dir / name
            if path.is_file() and path.read_text() == text:
                report.unchanged.append(name)
                continue
            tmp = path.with_name(f".{name}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(path)
            report.written.append(name)
    except OSError as exc:
        raise ConfigError(f"cannot write the units to {unit_dir}: {exc.strerror or exc}") from None
    report.systemd = systemd_running()
    if not report.systemd:
        report.notes.append(
            "systemd is not running here (it is not PID 1), so nothing was enabled. Once it is: "
            f"systemctl daemon-reload && systemctl enable --now {' '.join(UNITS)}. Without systemd, run "
            "`labgpu boot` from your init system at start-up (e.g. /etc/rc.local) and keep `labgpu serve` "
            "and `labgpu agent` running with your supervisor."
        )
        return report
    if not enable:
        report.notes.append(f"not enabled (--no-enable): systemctl enable --now {' '.join(UNITS)}")
        return report
    if unit_dir != DEFAULT_UNIT_DIR:
        report.notes.append(f"{unit_dir} is not {DEFAULT_UNIT_DIR}: make sure systemd reads it")
    for args in (
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", *(["--now"] if start else []), *UNITS],
    ):
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise ConfigError(f"{' '.join(args)} failed: {(done.stderr or done.stdout).strip()[:300]}")
    report.enabled = list(UNITS)
    return report
