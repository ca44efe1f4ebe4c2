"""``/healthz``: whether the store and the runtime answer."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from labgpu import __version__
from labgpu.errors import LabgpuError
from labgpu.runtime.client import RuntimeClient

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    """Whether the store and the runtime answer. 200 when both do, 503 otherwise."""
    settings = request.app.state.settings
    checks: dict[str, Any] = {}
    ok = True
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except Exception as exc:
        ok = False
        checks["database"] = {"ok": False, "detail": type(exc).__name__}
    try:
        with RuntimeClient.from_settings(settings) as runtime:
            info = runtime.server()
        checks["runtime"] = {"ok": True, "kind": info.kind, "version": info.version}
    except LabgpuError as exc:
        ok = False
        checks["runtime"] = {"ok": False, "detail": exc.message}
    body = {"status": "ok" if ok else "degraded", "version": __version__, "checks": checks}
    return JSONResponse(body, status_code=200 if ok else 503)
