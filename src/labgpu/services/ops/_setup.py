"""`labgpu setup`: everything a fresh host needs, from an installed package (no checkout), safe to repeat.

Steps, in order, each keeping what is already there: the system packages (apt-get; LXD too when no
daemon is installed), the daemon (started where it does not run: its units under systemd, by hand
without), the store's schema, `host init` (pool, network, profile, subuid/subgid: it restarts the daemon
itself when those changed), the minimal template (built offline with debootstrap, cached by recipe), the
portal's TLS certificate (when it listens on an address other than loopback), and the systemd units for
boot, the portal (which runs the jobs) and the GPU agent where systemd runs. Without systemd the command
then runs the portal in the foreground (the CLI's part).

scripts/quickstart, in a checkout, makes the virtualenv and runs this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labgpu.errors import ConfigError, LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.services import hosts, templates
from labgpu.settings import Settings
from labgpu.store.migrate import upgrade
from labgpu.system import daemons, packages, tls
from labgpu.system.systemd import InstallReport

DAEMON_READY_TIMEOUT = 120.0
DONE, UNCHANGED, SKIPPED = "done", "unchanged", "skipped"


@dataclass(frozen=True)
class SetupStep:
    name: str  # "packages", "daemon", "database", "host", "template", "tls", "services"
    status: str  # done, unchanged, skipped
    detail: str
    lines: tuple[str, ...] = ()  # what the step did, one line each (host init's steps)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "lines": list(self.lines)}


@dataclass
class SetupReport:
    steps: list[SetupStep] = field(default_factory=list)
    runtime: str = ""
    portal_tls: tls.PortalTls | None = None
    units: InstallReport | None = None
    systemd: bool = False

    def as_dict(self) -> dict[str, Any]:
        portal = self.portal_tls
        return {
            "steps": [s.as_dict() for s in self.steps],
            "runtime": self.runtime,
            "systemd": self.systemd,
            "portal": None
            if portal is None
            else {
                "scheme": portal.scheme,
                "certificate": str(portal.certfile or ""),
                "fingerprint": portal.fingerprint,
            },
            "units": None if self.units is None else self.units.as_dict(),
        }


def _answering(settings: Settings) -> tuple[RuntimeClient, str] | None:
    runtime = RuntimeClient.from_settings(settings)
    try:
        server = runtime.server(timeout=10)
    except LabgpuError:
        runtime.close()
        return None
    return runtime, hosts.runtime_label(runtime, server)


def _packages(report: SetupReport, daemon_answers: bool) -> None:
    need_daemon = not daemon_answers and daemons.installed_kind() is None
    missing = packages.missing_packages(packages.wanted_packages(daemon=need_daemon))
    if not missing:
        report.steps.append(
            SetupStep("packages", UNCHANGED, "every system package labgpu needs is installed")
        )
        return
    packages.install_packages(missing)
    report.steps.append(SetupStep("packages", DONE, f"installed {' '.join(missing)}"))


def _daemon(report: SetupReport, settings: Settings) -> RuntimeClient:
    found = _answering(settings)
    if found is not None:
        report.runtime = found[1]
        report.steps.append(SetupStep("daemon", UNCHANGED, f"{found[1]} answers"))
        return found[0]
    if settings.runtime_url and not settings.runtime_url.startswith("unix:"):
        raise ConfigError(
            f"the daemon at {settings.runtime_url} does not answer; labgpu starts only a daemon on this machine",
            hint="start it on its host, or unset runtime_url",
        )
    kind = daemons.installed_kind()
    if kind is None:
        raise ConfigError("neither LXD nor Incus is installed", hint="run labgpu setup without --no-packages")
    how = daemons.start_daemon(kind)
    holder: list[tuple[RuntimeClient, str]] = []

    def ready() -> bool:
        got = _answering(settings)  # a new client: the socket may appear only now
        if got is not None:
            holder.append(got)
        return got is not None

    if not daemons.wait_until(ready, DAEMON_READY_TIMEOUT):
        raise ConfigError(
            f"{kind} was started ({how}) but does not answer after {DAEMON_READY_TIMEOUT:g}s",
            hint=f"see its log in {daemons.DEFAULT_LOG_DIR} (or journalctl -u {kind})",
        )
    runtime, label = holder[-1]
    report.runtime = label
    report.steps.append(SetupStep("daemon", DONE, f"started {kind}: {how}"))
    return runtime


def _host(report: SetupReport, runtime: RuntimeClient, settings: Settings, paths: hosts.HostPaths) -> None:
    done = hosts.init_host(runtime, settings, paths=paths)
    lines = tuple(f"{s.status}: {s.step} {s.target}: {s.detail}".replace(" -:", ":") for s in done.steps)
    lines += tuple(f"note: {n}" for n in done.notes)
    attention = done.needs_attention
    if attention:
        raise ConfigError(
            "host init: " + "; ".join(f"{s.step} {s.target}: {s.detail}" for s in attention),
            hint="fix this (labgpu host init --dry-run shows it), then run labgpu setup again",
        )
    status = UNCHANGED if done.nothing_to_change else DONE
    report.steps.append(SetupStep("host", status, done.runtime, lines))


def setup(
    settings: Settings,
    *,
    config_path: Path | None = None,
    install_packages: bool = True,
    template: bool = True,
    units: bool = True,
    paths: hosts.HostPaths | None = None,
    on_step: Callable[[SetupStep], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> SetupReport:
    """Bring this host to a running labgpu (see the module's docstring); each step is reported to
    ``on_step`` as it ends, build lines to ``progress``. Waits for everything, the template build
    included (about a minute the first time). Raises ConfigError (or another LabgpuError) at the first
    step that fails, after the steps before it were done: running it again goes on from there."""
    report = SetupReport(systemd=daemons.systemd_running())
    seen = 0

    def tell() -> None:
        nonlocal seen
        for step in report.steps[seen:]:
            if on_step is not None:
                on_step(step)
        seen = len(report.steps)

    if install_packages:
        probe = _answering(settings)
        if probe is not None:
            probe[0].close()
        _packages(report, daemon_answers=probe is not None)
    else:
        report.steps.append(SetupStep("packages", SKIPPED, "--no-packages"))
    tell()
    runtime = _daemon(report, settings)
    tell()
    try:
        migrated = upgrade(settings)
        report.steps.append(
            SetupStep(
                "database",
                DONE if migrated.changed else UNCHANGED,
                f"schema at revision {migrated.after}"
                + (f" (was {migrated.before})" if migrated.changed else ""),
            )
        )
        tell()
        _host(report, runtime, settings, paths or hosts.HostPaths())
        tell()
        if template:
            built = templates.bootstrap_template(runtime, alias=settings.default_template, progress=progress)
            what = "published" if built.imported else "up to date"
            report.steps.append(
                SetupStep("template", DONE if built.imported else UNCHANGED, f"{built.alias} {what}")
            )
        else:
            report.steps.append(SetupStep("template", SKIPPED, "--no-template"))
        tell()
    finally:
        runtime.close()
    report.portal_tls = tls.portal_tls(settings, settings.web_host)
    portal = report.portal_tls
    detail = f"{portal.scheme} on {settings.web_host}:{settings.web_port}"
    if portal.https:
        detail += f", certificate {portal.certfile} (SHA-256 {portal.fingerprint})"
    report.steps.append(SetupStep("tls", DONE if portal.generated_now else UNCHANGED, detail))
    tell()
    if units and report.systemd:
        report.units = hosts.install_units(config=config_path, start=True)
        changed = report.units.written
        report.steps.append(
            SetupStep(
                "services",
                DONE if changed else UNCHANGED,
                f"systemd units enabled and started: {', '.join(report.units.enabled)}",
                tuple(report.units.notes),
            )
        )
    elif units:
        report.steps.append(
            SetupStep(
                "services",
                SKIPPED,
                "systemd is not running here: no units (the portal runs in the foreground)",
            )
        )
    else:
        report.steps.append(SetupStep("services", SKIPPED, "--no-services"))
    tell()
    return report
