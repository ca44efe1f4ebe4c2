"""The web application: built by :func:`create_app` from settings, nothing at import."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import text

from labgpu import __version__
from labgpu.errors import LabgpuError
from labgpu.settings import Settings

TEMPLATES_DIR = Path(__file__).parent / "templates"


def create_app(settings: Settings) -> FastAPI:
    """The portal and JSON API for ``settings``. Does no I/O until a request comes."""
    from labgpu.runtime.client import RuntimeClient
    from labgpu.store.db import create_engine_for

    app = FastAPI(title="labgpu", version=__version__, docs_url="/api/docs", redoc_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    engine = create_engine_for(settings)
    app.state.settings = settings
    app.state.engine = engine

    @app.exception_handler(LabgpuError)
    async def labgpu_error(request: Request, exc: LabgpuError) -> Any:
        body = {"error": {"reason": exc.reason, "message": exc.message}}
        if request.url.path.startswith("/api") or request.url.path == "/healthz":
            return JSONResponse(body, status_code=exc.status)
        return templates.TemplateResponse(
            request, "error.html", {"error": exc, "version": __version__}, status_code=exc.status
        )

    @app.get("/healthz", tags=["health"])
    def healthz() -> JSONResponse:
        """Whether the store and the runtime answer. 200 when both do, 503 otherwise."""
        checks: dict[str, Any] = {}
        ok = True
        try:
            with engine.connect() as conn:
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

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Any:
        return templates.TemplateResponse(request, "index.html", {"version": __version__})

    return app
