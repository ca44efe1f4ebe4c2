"""After cancelling a booking from the command line: detach its GPUs at once, container by container.

The portal's :func:`labgpu.services.gpus.cancel_booking` does the same but sums the detach up in one note;
the CLI shows (and its ``--json`` prints) every container's outcome and exits 1 when one was refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from labgpu.errors import LabgpuError
from labgpu.gpu.nvml import GpuSource
from labgpu.services.context import Services
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus._attach import AttachOutcome
from labgpu.services.gpus._bookings import Cancelled
from labgpu.store.models import Host


@dataclass(frozen=True)
class DetachReport:
    """What happened to the GPUs of a cancelled booking: each container's outcome, or why not now."""

    outcomes: list[AttachOutcome] = field(default_factory=list)
    note: str = ""  # "" when nothing needs saying: why the GPUs were not detached here and now

    @property
    def failed(self) -> bool:
        return any(o.failed for o in self.outcomes)

    def as_dict(self) -> dict[str, Any]:
        return {"detach": [o.as_dict() for o in self.outcomes], "note": self.note or None}


def detach_cancelled(svc: Services, done: Cancelled, *, source: GpuSource | None = None) -> DetachReport:
    """Detach the GPUs of a booking that :func:`labgpu.services.gpus.cancel` ended early, from the member's
    container, through the daemon of the booking's host (``source``: that host's GPUs, default NVML).
    Nothing to do for a booking that had not started. When the host is unknown or its daemon does not
    answer, the job runner detaches them within a minute and the note says so. Waits for the detach."""
    if not done.ended_early:
        return DetachReport()
    with svc.session() as session:
        host = session.scalars(select(Host).where(Host.name == done.booking.host)).first()
    if host is None:
        return DetachReport(note="its GPUs are detached by the job runner")
    try:
        outcomes = gpu_attach.sync_host(svc, host=host, source=source, members={done.booking.member})
    except LabgpuError as exc:
        return DetachReport(
            note=f"GPUs not detached from {host.name} yet ({exc.message}); the job runner detaches them"
        )
    return DetachReport(outcomes=outcomes)
