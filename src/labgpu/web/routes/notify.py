"""Pages: my notification channels (add an Apprise URL with the kinds of event it gets, send it a test,
remove it). A member sees and changes only their own: another's channel is as missing as none."""

from __future__ import annotations

import functools
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse

from labgpu.errors import N_
from labgpu.services import notify
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.web.deps import CurrentMember, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome, Page
from labgpu.web.templating import Renderer

router = APIRouter(include_in_schema=False)

# The kinds a member may choose for a channel of theirs (new applications go to the admins only).
MEMBER_KINDS = tuple(k for k in notify.KINDS if k != notify.APPLICATION)


def _page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    identity: Identity,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    kinds = {k: label for k, label in notify.KINDS.items() if k in MEMBER_KINDS or identity.role == "admin"}
    return renderer.render(
        request,
        "notifications.html",
        status_code,
        channels=notify.list_channels(svc, identity.name),
        kinds=kinds,
        schemes=svc.settings.notify_member_schemes,
        mail_on=bool(svc.settings.smtp_host),
        mail_kinds=[k for k in kinds if k in svc.settings.notify_mail_kinds],
        account=identity.name,
        **{"form": {}, **extra},
    )


def _notifications(request: Request, renderer: Renderer, svc: Services, identity: Identity) -> Page:
    return functools.partial(_page, request, renderer, svc, identity)


@router.get("/account/notifications")
def notifications(
    request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    return _page(request, renderer, svc, identity)


@router.post("/account/notifications")
def add_channel(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    url: Annotated[str, Form(max_length=2000)] = "",
    label: Annotated[str, Form(max_length=64)] = "",
    kind: Annotated[list[str] | None, Form(max_length=32)] = None,
) -> HTMLResponse:
    kinds = list(kind or [])
    with Outcome(request, renderer) as out:
        info = notify.add_channel(svc, identity.name, url=url, label=label, kinds=kinds)
        out.done(N_("Channel %(name)s added. Send it a test to see that it works."), {"name": info.label})
    if out.failed:  # keep what was typed, but never the URL (it may hold a key)
        out.shown.update(form={"label": label, "kind": kinds})
    return out.show(_notifications(request, renderer, svc, identity))


@router.post("/account/notifications/{channel_id}/test")
def test_channel(
    channel_id: int, request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        check = notify.check_channel(svc, identity.name, channel_id)
        if check.ok:
            out.done(N_("A test message was sent to %(channel)s."), {"channel": check.channel})
        else:
            out.shown.update(test_failed={"channel": check.channel, "error": check.error or ""})
    return out.show(_notifications(request, renderer, svc, identity))


@router.post("/account/notifications/{channel_id}/remove")
def remove_channel(
    channel_id: int, request: Request, identity: CurrentMember, svc: ServicesDep, renderer: RendererDep
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        info = notify.remove_channel(svc, identity.name, channel_id)
        out.done(N_("Channel %(name)s removed."), {"name": info.label})
    return out.show(_notifications(request, renderer, svc, identity))
