"""What a doctor check is (:class:`Check`, its :class:`CheckStatus`), the helpers that make one, and the
checks of the host's own tools: shared by ``_doctor`` and kept apart so that it stays one readable page."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from labgpu.errors import LabgpuError
from labgpu.settings import Settings
from labgpu.system.commands import which as system_which
from labgpu.system.tls import portal_tls


class CheckStatus(StrEnum):
    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    NA = "n-a"


@dataclass(frozen=True)
class Check:
    """One prerequisite and what was found."""

    name: str
    status: CheckStatus
    detail: str
    fix: str = ""
    critical: bool = True

    @property
    def ok(self) -> bool:
        return self.status in (CheckStatus.OK, CheckStatus.NA)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "status": str(self.status),
            "detail": self.detail,
            "fix": self.fix,
            "critical": self.critical,
        }


def ok(name: str, detail: str, *, critical: bool = True) -> Check:
    return Check(name, CheckStatus.OK, detail, critical=critical)


def fail(name: str, detail: str, fix: str, *, critical: bool = True) -> Check:
    return Check(name, CheckStatus.FAIL, detail, fix, critical=critical)


def warn(name: str, detail: str, fix: str) -> Check:
    return Check(name, CheckStatus.WARN, detail, fix, critical=False)


def na(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.NA, detail, critical=False)


# Host tools that commands doctor vouches for run, by the command that needs them, with the Debian package.
HOST_TOOLS = (
    ("debootstrap", "labgpu template bootstrap (the offline minimal template)", "debootstrap"),
    ("tar", "labgpu template bootstrap, backups", "tar"),
    ("gzip", "labgpu template bootstrap (packing the image)", "gzip"),
)


def host_tool_checks(which: Callable[[str], str | None]) -> list[Check]:
    """The programs labgpu's own commands run on the host; a missing one names the command and the package.
    Not critical: containers run without them, only those commands would fail."""
    missing = [(tool, needed_by, package) for tool, needed_by, package in HOST_TOOLS if which(tool) is None]
    if not missing:
        return [ok("host-tools", ", ".join(t for t, _, _ in HOST_TOOLS) + " installed", critical=False)]
    detail = "; ".join(f"{tool} is missing (needed by {needed_by})" for tool, needed_by, _ in missing)
    packages = " ".join(sorted({package for _, _, package in missing}))
    return [warn("host-tools", detail, f"apt-get install {packages}")]


def which_anywhere(tool: str) -> str | None:
    """On the caller's PATH, else in the system folders (debootstrap is in /usr/sbin, off a user's PATH)."""
    return shutil.which(tool) or system_which(tool)


def portal_tls_check(settings: Settings) -> Check:
    """How the portal is reached: HTTPS with which certificate (and its fingerprint, for members to compare),
    plain HTTP on loopback, behind a TLS proxy, or refused. Looks only: a missing generated certificate is
    made by `labgpu serve` or `labgpu setup`."""
    where = f"{settings.web_host}:{settings.web_port}"
    try:
        tls = portal_tls(settings, settings.web_host, create=False)
    except LabgpuError as exc:
        return fail("portal-tls", exc.message, exc.hint or "see docs/admin/portal.md", critical=False)
    if tls.source == "proxy":
        return ok(
            "portal-tls",
            f"plain HTTP on {where}; a reverse proxy terminates TLS (web_tls = proxy)",
            critical=False,
        )
    if not tls.https:
        return ok(
            "portal-tls",
            f"plain HTTP on {where}, loopback only (for members: web_host = 0.0.0.0, HTTPS)",
            critical=False,
        )
    if not tls.fingerprint:
        return warn(
            "portal-tls",
            f"HTTPS on {where} with a self-signed certificate not generated yet ({tls.certfile})",
            "labgpu setup or labgpu serve generates it",
        )
    kind = "self-signed certificate" if tls.source == "generated" else "certificate"
    return ok(
        "portal-tls", f"HTTPS on {where}, {kind} {tls.certfile}, SHA-256 {tls.fingerprint}", critical=False
    )
