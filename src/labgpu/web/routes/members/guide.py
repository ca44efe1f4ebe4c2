"""Pages: the member's guide (docs/member, see :mod:`labgpu.web.guide`), in the reader's language, with
their own container's host, ports and home put in where the guide shows its examples.

For logged-in people only, members and admins alike (a visitor is sent to log in): the guide is written for
members and public in the project's docs anyway, and the portal keeps its public pages to logging in and
applying. A page is looked up by name in the guide's fixed list; nothing from the URL reaches a path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse

from labgpu.errors import N_, NotFound
from labgpu.services import members
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.web import guide
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep
from labgpu.web.templating import Renderer
from labgpu.web.views import connection_sheet

router = APIRouter(include_in_schema=False)


def _values(svc: Services, identity: Identity) -> guide.ReaderValues | None:
    """The reader's own values, from the store (no daemon request); None without a container."""
    sheet = connection_sheet(svc, members.get_member(svc, identity.name, live=False))
    if sheet is None:
        return None
    return guide.ReaderValues(
        name=sheet.name,
        address=sheet.address,
        user=sheet.user,
        ports=dict(sheet.ports),
        container_home=sheet.container_home,
    )


def _show(request: Request, renderer: Renderer, svc: Services, identity: Identity, name: str) -> HTMLResponse:
    locale = renderer.locale(request)
    contents = guide.pages(locale)
    page = contents.get(name)
    if page is None:
        raise NotFound(N_("the member's guide has no such page"))
    values = _values(svc, identity)
    return renderer.render(
        request,
        "guide.html",
        title=page.title,
        page=page,
        contents=list(contents.values()),
        body=guide.render(page, locale, values),
        values=values,
    )


@router.get("/help")
def guide_index(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _show(request, renderer, svc, identity, "")


@router.get("/help/{page}")
def guide_page(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    page: Annotated[str, Path(max_length=64)],
) -> HTMLResponse:
    return _show(request, renderer, svc, identity, page)
