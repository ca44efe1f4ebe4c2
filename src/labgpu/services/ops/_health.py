"""Whether the store and the runtime answer: what ``/healthz`` reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from labgpu.errors import LabgpuError
from labgpu.services.context import Services


@dataclass(frozen=True)
class Health:
    ok: bool
    # Per component ("database", "runtime"): {"ok": bool, ...details}; never a secret, never a traceback.
    checks: dict[str, Any] = field(default_factory=dict)


def health(svc: Services) -> Health:
    """Ask the store for ``SELECT 1`` and the daemon for its server info; each failure is named, not raised."""
    checks: dict[str, Any] = {}
    try:
        with svc.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:
        checks["database"] = {"ok": False, "detail": type(exc).__name__}
    try:
        info = svc.runtime.server(refresh=True)
        checks["runtime"] = {"ok": True, "kind": info.kind, "version": info.version}
    except LabgpuError as exc:
        checks["runtime"] = {"ok": False, "detail": exc.message}
    return Health(ok=all(c["ok"] for c in checks.values()), checks=checks)
