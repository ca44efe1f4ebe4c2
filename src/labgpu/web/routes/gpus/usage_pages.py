"""Pages: my GPU usage (every member, their own) and the lab's GPU usage (admins), with charts drawn on the
server, CSV downloads, the fair-use actions with their reasons, and the weekly report opt-in. The figures
are :func:`labgpu.services.gpus.usage_report`'s, the same the CLI and the API give."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from labgpu.errors import N_
from labgpu.services import gpus as gpus_svc
from labgpu.services.context import Services
from labgpu.services.portal import Identity
from labgpu.web.charts import stacked_bars
from labgpu.web.deps import AdminRequired, CurrentMember, RendererDep, ServicesDep
from labgpu.web.outcome import Outcome
from labgpu.web.templating import Renderer

router = APIRouter(include_in_schema=False)
SPANS = ("24h", "7d", "30d", "90d")
SinceQuery = Annotated[str, Query(max_length=16)]
ByQuery = Annotated[str, Query(max_length=8)]


def _chart(request: Request, renderer: Renderer, report: gpus_svc.UsageReport, title: str) -> Any:
    gettext = renderer.gettext(request)
    # The usage of no member ("(others)") is named in the reader's language, as the table names it.
    outside = gettext("others (host processes, containers not labgpu's)")
    series = {outside if name == "(others)" else name: values for name, values in report.series.items()}
    return stacked_bars(
        report.buckets,
        series,
        tz=gpus_svc.local_tz(),
        unit=report.unit,
        title=gettext(title),
        others=gettext("others"),
    )


def _my_page(
    request: Request,
    renderer: Renderer,
    svc: Services,
    identity: Identity,
    status_code: int = 200,
    *,
    since: str = "7d",
    **extra: Any,
) -> HTMLResponse:
    report = gpus_svc.usage_report(svc, since=since, by="gpu", member=identity.name, tz=gpus_svc.local_tz())
    return renderer.render(
        request,
        "usage.html",
        status_code,
        report=report,
        since=since,
        spans=SPANS,
        chart=_chart(request, renderer, report, N_("My GPU-hours per GPU")),
        settings=gpus_svc.usage_settings(svc, identity.name),
        events=gpus_svc.fair_use_events(svc, member=identity.name, limit=20),
        tz=gpus_svc.local_tz(),
        **extra,
    )


@router.get("/usage")
def my_usage(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    since: SinceQuery = "7d",
) -> HTMLResponse:
    return _my_page(request, renderer, svc, identity, since=since)


@router.post("/usage/weekly-report")
def my_weekly_report(
    request: Request,
    identity: CurrentMember,
    svc: ServicesDep,
    renderer: RendererDep,
    weekly: Annotated[str, Form(max_length=3)] = "",
) -> HTMLResponse:
    with Outcome(request, renderer) as out:
        on = weekly == "on"
        gpus_svc.set_usage_settings(svc, identity.name, weekly_report=on)
        out.done(
            N_("You get the weekly GPU usage report.") if on else N_("You no longer get the weekly report.")
        )
    return out.show(lambda status, **extra: _my_page(request, renderer, svc, identity, status, **extra))


def _csv(report: gpus_svc.UsageReport, name: str) -> Response:
    return Response(
        report.to_csv(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/usage.csv")
def my_usage_csv(
    identity: CurrentMember, svc: ServicesDep, since: SinceQuery = "7d", by: ByQuery = "gpu"
) -> Response:
    report = gpus_svc.usage_report(svc, since=since, by=by, member=identity.name, tz=gpus_svc.local_tz())
    return _csv(report, f"gpu-usage-{identity.name}-{report.by}.csv")


@router.get("/admin/usage")
def lab_usage(
    request: Request, _: AdminRequired, svc: ServicesDep, renderer: RendererDep, since: SinceQuery = "7d"
) -> HTMLResponse:
    tz = gpus_svc.local_tz()
    reports = {by: gpus_svc.usage_report(svc, since=since, by=by, tz=tz) for by in gpus_svc.BY}
    titles = {
        "member": N_("GPU-hours per member"),
        "gpu": N_("GPU-hours per GPU"),
        "host": N_("GPU-hours per host"),
    }
    charts = {by: _chart(request, renderer, r, titles[by]) for by, r in reports.items()}
    return renderer.render(
        request,
        "admin_usage.html",
        reports=reports,
        charts=charts,
        since=since,
        spans=SPANS,
        events=gpus_svc.fair_use_events(svc, limit=50),
        tz=tz,
        section="usage",
    )


@router.get("/admin/usage.csv")
def lab_usage_csv(
    _: AdminRequired, svc: ServicesDep, since: SinceQuery = "7d", by: ByQuery = "member"
) -> Response:
    report = gpus_svc.usage_report(svc, since=since, by=by, tz=gpus_svc.local_tz())
    return _csv(report, f"gpu-usage-lab-{report.by}.csv")
