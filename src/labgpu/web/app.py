"""The web application: built by :func:`create_app` from settings, nothing at import.

Layout: ``deps`` (typed dependencies: who is asking, the services acting for them, object-level checks),
``security`` (identity from cookie or bearer token, CSRF, cookies), ``errors`` (the one exception handler),
``templating`` and ``i18n`` (pages in English and Simplified Chinese), ``schemas`` (the JSON API's models),
``routes/`` (``api_*``: JSON under /api/v1; ``pages_*``: HTML).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from labgpu import __version__
from labgpu.services import members
from labgpu.services.context import Actor, Services
from labgpu.services.gpus import GpuUsageReader
from labgpu.settings import Settings
from labgpu.web.errors import install_error_handler
from labgpu.web.security import csrf_protect, csrf_token, request_identity, set_pending_cookies
from labgpu.web.templating import Renderer

STATIC_DIR = Path(__file__).parent / "static"
log = logging.getLogger("labgpu.web")

# No inline scripts or styles anywhere: htmx and app.js come from /static, htmx's indicator styles are off.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _active_notices(request: Request) -> list[object]:
    """The admins' maintenance notices, shown at the top of every page; none when the store fails."""
    from labgpu.services.portal import active_notices

    try:
        return list(active_notices(request.app.state.services))
    except Exception:
        log.exception("cannot read the notices")
        return []


def _build_services(settings: Settings) -> Services:
    from labgpu.runtime.client import RuntimeClient
    from labgpu.runtime.endpoint import Endpoint, candidate_sockets
    from labgpu.runtime.errors import RuntimeUnavailable
    from labgpu.store.db import create_engine_for, session_factory

    try:
        runtime = RuntimeClient.from_settings(settings)
    except RuntimeUnavailable as exc:
        # Logging in and accounts work without a daemon; pages that need one say it is unreachable.
        log.warning("%s; container pages will show it as unreachable", exc.message)
        runtime = RuntimeClient(
            Endpoint.unix(candidate_sockets()[0]),
            timeout=settings.runtime_timeout,
            operation_timeout=settings.operation_timeout,
            project=settings.runtime_project,
        )
    engine = create_engine_for(settings)
    return Services(settings=settings, runtime=runtime, sessions=session_factory(engine), actor=Actor("web"))


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    background: bool = True,
    gpu_usage: GpuUsageReader | None = None,
) -> FastAPI:
    """The portal and JSON API for ``settings``. Does no I/O until a request comes (except creating the
    secret key file in state_dir when there is none yet).

    ``services`` lets tests hand in their own (a real daemon, a private store); by default they are built
    from ``settings``. The database must be migrated already (``labgpu serve`` does it). With
    ``background`` (the default) approved applications are provisioned by a worker thread, and those left
    unfinished by an earlier run are resumed at start-up; without it they stay queued in the store.
    ``gpu_usage`` reads the hosts' GPUs (tests give one over recorded NVML readings); by default the real
    NVML of this machine and the hosts' agents."""
    from labgpu.services import apps
    from labgpu.services.ops import start_job_runner
    from labgpu.services.portal import ProvisionWorker
    from labgpu.web.routes import hosts, notify, ops, templates
    from labgpu.web.routes.apps import pages as apps_pages
    from labgpu.web.routes.gpus import api as gpus_api
    from labgpu.web.routes.gpus import pages as gpus_pages
    from labgpu.web.routes.gpus import usage_api, usage_pages
    from labgpu.web.routes.members import admin as members_admin
    from labgpu.web.routes.members import api as members_api
    from labgpu.web.routes.members import guide as members_guide
    from labgpu.web.routes.members import me
    from labgpu.web.routes.members import my_templates as members_my_templates
    from labgpu.web.routes.members import my_templates_api as members_my_templates_api
    from labgpu.web.routes.members import terminal as members_terminal
    from labgpu.web.routes.portal import account, apply, auth, signon, totp
    from labgpu.web.routes.portal import admin as portal_admin
    from labgpu.web.routes.portal import api as portal_api

    owned = services is None
    svc = services if services is not None else _build_services(settings)
    worker = ProvisionWorker(dataclasses.replace(svc, actor=Actor("system")), enabled=background)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if background:
            resumed = await run_in_threadpool(worker.resume)
            if resumed:
                log.info("resuming the provisioning of %d approved application(s)", resumed)
        # Booking starts and ends, idle GPU checks, reconcile (labgpu.services.ops._jobs).
        stop_jobs = start_job_runner(svc) if owned and background and settings.jobs_in_serve else None
        yield
        terminals.end_all()
        if stop_jobs is not None:
            await run_in_threadpool(stop_jobs)
        await run_in_threadpool(worker.stop)
        if owned:
            svc.runtime.close()
            svc.engine.dispose()

    app = FastAPI(
        title="labgpu",
        version=__version__,
        description="Self-service GPU containers for research labs. Authenticate scripts with a personal "
        "API token: `Authorization: Bearer lgp_...` (make one on the account page).",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(csrf_protect)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = svc
    app.state.engine = svc.engine
    app.state.worker = worker
    app.state.gpu_usage = gpu_usage if gpu_usage is not None else GpuUsageReader()
    app.state.secret_key = settings.session_secret()
    renderer = Renderer(csrf_token=csrf_token, identity=request_identity, notices=_active_notices)
    app.state.renderer = renderer
    # Web apps and files (issue 16): tickets for the apps origin, and a limit on app starts and uploads.
    app.state.tickets = apps.Tickets(app.state.secret_key)
    app.state.app_opens = apps.RateLimiter(settings.apps_opens_per_minute)
    terminals = members.Terminals(
        max_open=settings.terminal_max_open, opens_per_minute=settings.terminal_opens_per_minute
    )
    app.state.terminals = terminals  # the terminals open in the browser (web/routes/members/terminal.py)

    install_error_handler(app, renderer)

    @app.middleware("http")
    async def finish_response(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if settings.apps_port:
            # The app buttons' forms POST here and are redirected to the apps origin: form-action must allow it
            # (browsers apply it to a form's redirects too).
            csp = CONTENT_SECURITY_POLICY.replace(
                "form-action 'self'", f"form-action 'self' {apps_pages.apps_origin(request)}"
            )
            response.headers.setdefault("Content-Security-Policy", csp)
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        set_pending_cookies(request, response)
        return response

    trusted = [h.strip() for h in settings.trusted_proxies.split(",") if h.strip()]
    if trusted:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for module in (
        ops,
        portal_api,
        members_my_templates_api,  # before members_api: /members/{name}/templates is not a power action
        members_api,
        gpus_api,
        usage_api,
        hosts,
        templates,
        auth,
        totp,
        apply,
        account,
        notify,
        me,
        members_my_templates,
        portal_admin,
        members_admin,
        gpus_pages,
        members_terminal,
        members_guide,
        usage_pages,
        signon,
        apps_pages,
    ):
        app.include_router(module.router)
    return app
