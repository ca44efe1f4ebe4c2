"""`labgpu agent`: one per GPU host, serving the inventory to the portal and metrics to Prometheus.

- ``GET /v1/gpus``: the inventory with attribution, as JSON (:meth:`Inventory.to_json`).
- ``GET /metrics``: Prometheus text format, per GPU and per member (see docs/admin/gpus.md).
- ``GET /healthz``: "ok", without authentication and without data.

Authentication is a bearer token (the ``agent_token`` setting): ``Authorization: Bearer TOKEN`` on
every request but ``/healthz``. Without a token the agent only agrees to listen on a loopback
address (:func:`check_exposure`): who uses which GPU is not for the whole campus network.

A sweep (NVML + /proc) runs at most once per ``min_interval`` seconds whatever the request rate;
concurrent requests share it.
"""

from __future__ import annotations

import ipaddress
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException as StarletteHTTPException

from labgpu.errors import ConfigError
from labgpu.gpu.inventory import Inventory

GPU_LABELS = ["gpu", "uuid", "name"]
MEMBER_LABELS = [*GPU_LABELS, "member", "container", "where"]

Sweep = Callable[[], Inventory]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve GPU data on a non-loopback address without a token. Raises ConfigError."""
    if not token and not is_loopback(host):
        raise ConfigError(
            f"the agent would serve who uses which GPU on {host} to anyone: set agent_token",
            hint="python3 -c 'import secrets; print(secrets.token_urlsafe(32))', put it in agent_token "
            "(LABGPU_AGENT_TOKEN) here and in the portal; or listen on 127.0.0.1 only",
        )


class SharedSweep:
    """Runs ``sweep`` at most once per ``min_interval`` seconds; callers in between share the result."""

    def __init__(
        self, sweep: Sweep, *, min_interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ):
        self._sweep = sweep
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: Inventory | None = None
        self._at = 0.0

    def __call__(self) -> Inventory:
        with self._lock:
            if self._last is None or self._clock() - self._at >= self._min_interval:
                self._last = self._sweep()
                self._at = self._clock()
            return self._last


# A gap between two sweeps longer than this is not counted as GPU time (the agent was not asked).
MAX_COUNTED_GAP = 300.0


class MemberSeconds:
    """GPU time per member and GPU, counted by the agent since it started: at each new sweep, the time
    since the previous one (at most :data:`MAX_COUNTED_GAP`) goes to every member with processes on the
    GPU. A Prometheus counter: ``increase(...[7d]) / 3600`` is GPU-hours, ``rate(...)`` GPUs in use."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str, str, str], float] = {}
        self._last: float | None = None
        self._lock = threading.Lock()

    def count(self, inv: Inventory) -> dict[tuple[str, str, str, str], float]:
        with self._lock:
            if self._last is not None and inv.taken_at > self._last:
                gap = min(inv.taken_at - self._last, MAX_COUNTED_GAP)
                on = {
                    (str(u.gpu.index), u.gpu.uuid, u.gpu.name, p.member)
                    for u in inv.gpus
                    for p in u.processes
                    if p.member
                }
                for key in on:
                    self.seconds[key] = self.seconds.get(key, 0.0) + gap
            if self._last is None or inv.taken_at > self._last:
                self._last = inv.taken_at
            return dict(self.seconds)


class InventoryCollector(Collector):
    """Prometheus metrics from one sweep per scrape."""

    def __init__(self, sweep: Sweep) -> None:
        self._sweep = sweep
        self._member_seconds = MemberSeconds()

    def collect(self) -> Iterator[Metric]:
        inv = self._sweep()
        yield from self._members(inv)
        up = GaugeMetricFamily("labgpu_nvml_up", "1 when NVML could be read on this host, else 0")
        up.add_metric([], 1.0 if inv.available else 0.0)
        yield up
        sweep = GaugeMetricFamily("labgpu_gpu_sweep_seconds", "How long the last inventory sweep took")
        sweep.add_metric([], inv.seconds)
        yield sweep

        def gauge(name: str, help_text: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help_text, labels=GPU_LABELS)

        info = GaugeMetricFamily(
            "labgpu_gpu_info",
            "Always 1; labels describe the GPU",
            labels=[*GPU_LABELS, "pci_address", "driver"],
        )
        gpu_up = gauge("labgpu_gpu_up", "1 when the GPU answered, 0 when it is lost or broken")
        util = gauge("labgpu_gpu_utilization_percent", "Percent of time a kernel ran on the GPU")
        mem_util = gauge(
            "labgpu_gpu_memory_utilization_percent", "Percent of time GPU memory was read or written"
        )
        used = gauge("labgpu_gpu_memory_used_bytes", "GPU memory in use")
        total = gauge("labgpu_gpu_memory_total_bytes", "GPU memory installed")
        temp = gauge("labgpu_gpu_temperature_celsius", "GPU core temperature")
        power = gauge("labgpu_gpu_power_watts", "Power drawn by the GPU")
        limit = gauge("labgpu_gpu_power_limit_watts", "Power limit the driver enforces")
        procs = gauge("labgpu_gpu_processes", "Processes using the GPU")
        for usage in inv.gpus:
            g = usage.gpu
            labels = [str(g.index), g.uuid, g.name]
            info.add_metric([*labels, g.pci_address, inv.driver_version], 1.0)
            gpu_up.add_metric(labels, 0.0 if g.error else 1.0)
            procs.add_metric(labels, float(len(usage.processes)))
            for family, value in (
                (util, g.utilization),
                (mem_util, g.memory_utilization),
                (used, g.memory_used),
                (total, g.memory_total),
                (temp, g.temperature),
                (power, g.power_watts),
                (limit, g.power_limit_watts),
            ):
                if value is not None:
                    family.add_metric(labels, float(value))
        yield from (info, gpu_up, util, mem_util, used, total, temp, power, limit, procs)

        m_used = GaugeMetricFamily(
            "labgpu_member_gpu_memory_used_bytes",
            "GPU memory used by a member's container (member and container empty for host processes)",
            labels=MEMBER_LABELS,
        )
        m_procs = GaugeMetricFamily(
            "labgpu_member_gpu_processes", "Processes of a member's container on a GPU", labels=MEMBER_LABELS
        )
        for row in inv.member_usage():
            labels = [
                str(row.gpu.index),
                row.gpu.uuid,
                row.gpu.name,
                row.member,
                row.container,
                row.where.value,
            ]
            m_used.add_metric(labels, float(row.used_memory))
            m_procs.add_metric(labels, float(row.processes))
        yield m_used
        yield m_procs

    def _members(self, inv: Inventory) -> Iterator[Metric]:
        """Usage per member: GPUs in use now, and GPU time counted since the agent started."""
        in_use = GaugeMetricFamily(
            "labgpu_member_gpus_in_use", "GPUs a member has processes on now", labels=["member"]
        )
        counts: dict[str, int] = {}
        for usage in inv.gpus:
            for member in {p.member for p in usage.processes if p.member}:
                counts[member] = counts.get(member, 0) + 1
        for member, n in sorted(counts.items()):
            in_use.add_metric([member], float(n))
        yield in_use
        seconds = CounterMetricFamily(
            "labgpu_member_gpu_seconds",
            "Seconds a member had processes on a GPU, counted since the agent started",
            labels=[*GPU_LABELS, "member"],
        )
        for (gpu, uuid, name, member), value in sorted(self._member_seconds.count(inv).items()):
            seconds.add_metric([gpu, uuid, name, member], value)
        yield seconds


def create_agent_app(*, sweep: Sweep, token: str | None, min_interval: float = 1.0) -> FastAPI:
    """The agent's ASGI app. ``sweep`` takes one inventory (tests pass one over recorded data)."""
    shared = SharedSweep(sweep, min_interval=min_interval)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(InventoryCollector(shared))
    expected = token.encode() if token else None

    def authorized(request: Request) -> None:
        if expected is None:
            return
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), expected):
            raise HTTPException(401, "a valid agent token is needed", headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="labgpu agent", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def _error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {401: "unauthorized", 404: "not-found"}.get(exc.status_code, "error")
        return JSONResponse(
            {"error": str(exc.detail), "reason": reason}, status_code=exc.status_code, headers=exc.headers
        )

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/v1/gpus", dependencies=[Depends(authorized)])
    def gpus() -> dict[str, Any]:
        return shared().to_json()

    @app.get("/metrics", dependencies=[Depends(authorized)])
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
