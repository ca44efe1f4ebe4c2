"""``/healthz``: whether the store and the runtime answer (for a load balancer or a monitoring probe)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from labgpu import __version__
from labgpu.services import ops
from labgpu.web.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(svc: ServicesDep) -> JSONResponse:
    """Whether the store and the runtime answer. 200 when both do, 503 otherwise."""
    report = ops.health(svc)
    body = {"status": "ok" if report.ok else "degraded", "version": __version__, "checks": report.checks}
    return JSONResponse(body, status_code=200 if report.ok else 503)
