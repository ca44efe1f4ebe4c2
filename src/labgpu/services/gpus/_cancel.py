"""Cancel a booking from the command line: end it, and detach its GPUs at once, container by container.

The portal's :func:`labgpu.services.gpus.cancel_booking` does the same but sums the detach up in one note;
the CLI shows (and its ``--json`` prints) every container's outcome and exits 1 when one was refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from labgpu.errors import LabgpuError
from labgpu.gpu.nvml import GpuSource
from labgpu.services.context import Services
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus._attach import AttachOutcome
from labgpu.services.gpus._bookings import BookingView
from labgpu.store.models import Host


@dataclass(frozen=True)
class CancelReport:
    """A cancelled booking; for one that had started, what happened to each container's GPUs."""

    booking: BookingView
    ended_early: bool
    detach: list[AttachOutcome] = field(default_factory=list)
    note: str = ""  # "" when nothing needs saying: why the GPUs were not detached here and now

    @property
    def failed(self) -> bool:
        return any(o.failed for o in self.detach)

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.booking.as_dict(),
            "detach": [o.as_dict() for o in self.detach],
            "note": self.note or None,
        }


def cancel_and_detach(
    svc: Services,
    booking_id: int,
    *,
    now: datetime | None = None,
    source: GpuSource | None = None,
) -> CancelReport:
    """Cancel a booking (one that runs ends now) and, for one that ran, detach its GPUs from the member's
    container through the daemon of the booking's host (``source``: that host's GPUs, default NVML).
    When the host is unknown or its daemon does not answer, the job runner detaches them within a minute
    and the note says so. Raises what :func:`labgpu.services.gpus.cancel` raises. Waits for the detach."""
    done = bookings.cancel(svc, booking_id, now=now)
    if not done.ended_early:
        return CancelReport(done.booking, False)
    with svc.session() as session:
        host = session.scalars(select(Host).where(Host.name == done.booking.host)).first()
    if host is None:
        return CancelReport(done.booking, True, note="its GPUs are detached by the job runner")
    try:
        outcomes = gpu_attach.sync_host(svc, host=host, source=source, members={done.booking.member})
    except LabgpuError as exc:
        note = f"GPUs not detached from {host.name} yet ({exc.message}); the job runner detaches them"
        return CancelReport(done.booking, True, note=note)
    return CancelReport(done.booking, True, detach=outcomes)
