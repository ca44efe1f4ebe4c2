"""The portal's side of web apps and files, for the member and admins (``{name}`` is checked on every request:
others get the 404 of a member that does not exist).

- ``GET /members/{name}/apps``: the apps card (buttons and states), loaded by htmx into "My container" and the
  admin's member page.
- ``POST /members/{name}/apps/{app}/open``: starts the app if needed, then sends the browser to the apps origin
  with a one-time ticket (see services/apps/_grants.py). A POST with the CSRF token: another site cannot make
  a member's browser start an app or obtain a ticket.
- ``POST /members/{name}/apps/{app}/stop``.
- ``GET /members/{name}/files``, ``GET .../files/download``, ``PUT .../files/upload``: the home's files,
  streamed both ways.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from labgpu.errors import N_, LabgpuError
from labgpu.services import apps
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep, VisibleMember
from labgpu.web.security import safe_next
from labgpu.web.templating import translate

router = APIRouter(include_in_schema=False)
AppName = Annotated[str, Path(max_length=32, pattern=r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")]
RelPath = Annotated[str, Query(max_length=1024)]


def apps_origin(request: Request) -> str:
    """The apps origin as this browser reaches it: apps_url, else the portal's scheme and host with apps_port."""
    settings = request.app.state.settings
    if settings.apps_url:
        return str(settings.apps_url).rstrip("/")
    host = request.url.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{request.url.scheme}://{host}:{settings.apps_port}"


def _limit(request: Request, key: str) -> None:
    limiter: apps.RateLimiter = request.app.state.app_opens
    if not limiter.allow(key):
        raise apps.RateLimited(N_("too many app requests; wait a minute and try again"))


@router.get("/members/{name}/apps")
def apps_card(name: VisibleMember, request: Request, svc: ServicesDep, renderer: RendererDep) -> HTMLResponse:
    view = apps.member_apps(svc, name)
    states = apps.app_states(svc, name) if view.apps else {}
    return renderer.render(
        request, "_apps.html", view=view, states=states, member_name=name, apps_on=svc.settings.apps_port != 0
    )


@router.post("/members/{name}/apps/{app}/open")
def open_app(
    name: VisibleMember, app: AppName, request: Request, identity: CurrentMember, svc: ServicesDep
) -> RedirectResponse:
    _limit(request, identity.name)
    target = apps.start_app(svc, name, app)
    tickets: apps.Tickets = request.app.state.tickets
    ticket = tickets.issue(
        account=identity.name,
        is_admin=identity.is_admin,
        session_id=identity.session_id or "",
        member=name,
        app=target.app.name,
    )
    return RedirectResponse(f"{apps_origin(request)}/_labgpu/enter?{urlencode({'ticket': ticket})}", 303)


@router.post("/members/{name}/apps/{app}/stop")
def stop_app(
    name: VisibleMember, app: AppName, request: Request, identity: CurrentMember, svc: ServicesDep
) -> RedirectResponse:
    _limit(request, identity.name)
    apps.stop_app(svc, name, app)
    back = "/me" if identity.name == name else f"/admin/members/{quote(name)}"
    return RedirectResponse(safe_next(back), 303)


@router.get("/members/{name}/files")
def files_page(
    name: VisibleMember, request: Request, svc: ServicesDep, renderer: RendererDep, path: RelPath = ""
) -> HTMLResponse:
    error = None
    folder = None
    try:
        folder = apps.list_folder(svc, name, path)
    except LabgpuError as exc:
        error = exc
        status = exc.status
    else:
        status = 200
    return renderer.render(
        request,
        "files.html",
        status,
        folder=folder,
        member_name=name,
        error=translate(renderer.gettext(request), error) if error else None,
        upload_max_mb=svc.settings.upload_max_mb,
    )


@router.get("/members/{name}/files/download")
def download(name: VisibleMember, svc: ServicesDep, path: RelPath = "") -> StreamingResponse:
    got = apps.download(svc, name, path)
    disposition = f"attachment; filename*=UTF-8''{quote(got.name, safe='')}"
    return StreamingResponse(
        got.chunks,
        media_type="application/octet-stream",
        headers={"Content-Disposition": disposition, "X-Content-Type-Options": "nosniff"},
    )


@router.put("/members/{name}/files/upload")
async def upload(
    name: Annotated[str, Path(max_length=64)],
    request: Request,
    path: RelPath = "",
    filename: Annotated[str, Query(max_length=255)] = "",
) -> JSONResponse:
    # The object-level check by hand: an async route (it reads the body as it comes) cannot take the sync deps.
    from labgpu.web.deps import check_member_access, get_services, require_member
    from labgpu.web.security import request_identity

    identity = require_member(await run_in_threadpool(request_identity, request))
    check_member_access(identity, name)
    svc = get_services(request, identity)
    _limit(request, identity.name)
    size_hint = request.headers.get("content-length")
    body = request.stream()

    import anyio.from_thread

    async def next_chunk() -> bytes | None:
        try:
            return await body.__anext__()
        except StopAsyncIteration:
            return None

    def chunks() -> Iterator[bytes]:
        while True:
            chunk = anyio.from_thread.run(next_chunk)
            if chunk is None:
                return
            if chunk:
                yield chunk

    size = await run_in_threadpool(
        apps.upload,
        svc,
        name,
        path,
        filename,
        chunks(),
        size_hint=int(size_hint) if size_hint and size_hint.isdigit() else None,
    )
    return JSONResponse({"size": size, "name": filename})
