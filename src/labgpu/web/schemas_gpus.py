"""JSON API schemas of the GPU usage and bookings routes (kept apart from ``schemas`` only for size)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# GPU usage ------------------------------------------------------------------------------------------


class GpuProcessOut(BaseModel):
    pid: int = Field(description="The process id on the host.")
    command: str
    where: str = Field(
        description="container; host (a process of the host itself); monitor (liblxc's, for a container); "
        "unknown (ended, or its cgroup could not be read)."
    )
    container: str | None = Field(description="The container (project/name outside the default project).")
    member: str | None = Field(description="The container's member; null for host processes.")
    memory: int | None = Field(description="GPU memory in bytes; null when the driver does not say.")


class GpuHolderOut(BaseModel):
    member: str
    booking: int | None = Field(description="The active booking; null: assigned by an admin.")
    until: datetime | None = Field(description="When the booking ends.")


class GpuOut(BaseModel):
    index: int = Field(description="As nvidia-smi numbers it.")
    name: str
    uuid: str
    pci_address: str
    utilization: int | None = Field(description="Percent; null when unknown (MIG, a lost GPU).")
    memory_used: int | None = Field(description="Bytes.")
    memory_total: int | None = Field(description="Bytes.")
    temperature: int | None = Field(description="Degrees Celsius.")
    error: str | None = Field(description="Why the GPU could not be read (fallen off the bus, ...).")
    processes: list[GpuProcessOut]
    held_by: list[GpuHolderOut] = Field(description="Who holds it now: active bookings, or assignment.")
    idle_since: datetime | None = Field(description="A held GPU that is idle (the idle rule): since when.")
    idle_minutes: int | None


class HostGpusOut(BaseModel):
    host: str
    gpu_mode: str = Field(description="shared, assigned or booked.")
    source: Literal["agent", "local", "none"] = Field(
        description="agent: the host's labgpu agent (its agent_url); local: read in the portal's process "
        "(a host on this machine); none: nothing to read from."
    )
    available: bool = Field(description="false: message says why there are no GPUs to show.")
    message: str | None
    driver_version: str | None
    cuda_version: str | None
    warnings: list[str]
    gpus: list[GpuOut]


# Bookings -------------------------------------------------------------------------------------------

TimeText = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="now, +2h / +90m / +1d, 14:00 (today), 2026-03-02 14:00, or ISO 8601 with an offset "
        "(2026-03-02T14:00+08:00). Without an offset: the server's time zone.",
    ),
]
GpuIndex = Annotated[int, Field(ge=0, le=1023)]


class BookingOut(BaseModel):
    id: int
    member: str
    host: str
    gpus: list[int]
    start: datetime = Field(description="Rounded down to a whole slot (booking_slot_minutes).")
    end: datetime = Field(description="Rounded up to a whole slot.")
    status: Literal["pending", "approved", "active", "ended", "cancelled", "rejected"]
    note: str | None
    gpu_hours: float
    created_at: datetime


class BookingCancelled(BookingOut):
    ended_early: bool = Field(description="It had started: it ended now and its GPUs are detached.")
    detach: str | None = Field(description="What happened to the GPUs of one that had started.")


class BookingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    gpus: (
        Annotated[int, Field(ge=1, le=1024)] | Annotated[list[GpuIndex], Field(min_length=1, max_length=64)]
    ) = Field(description="How many GPUs (labgpu picks free ones), or which: a list of indexes, e.g. [0, 2].")
    start: TimeText = Field("now", alias="from", description="The start (default: now).")
    until: TimeText = Field(description="The end: a time, or +4h after the start.")
    note: str | None = Field(None, max_length=255, description="What it is for (shown to admins).")
    member: str | None = Field(
        None, max_length=64, description="Whom the booking is for (admins only; default: the caller)."
    )


class BookingExtend(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    until: TimeText = Field(description="The new end: a time, or +2h after the current end.")


class BookingReject(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: str | None = Field(None, max_length=2000, description="Mailed to the member.")


class FreeRequestOut(BaseModel):
    """A request to be told when GPUs are free (``gpus.FreeRequestView``)."""

    id: int
    member: str
    host: str
    count: int = Field(description="How many GPUs must be free at once.")
    status: Literal["waiting", "sent", "expired", "cancelled"]
    created: datetime
    expires: datetime
    ended: datetime | None = Field(description="When it was told, expired or cancelled.")
    free_gpus: str | None = Field(description="The GPUs the notification named, e.g. 1,3.")


class FreeRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    count: int = Field(ge=1, le=64, description="How many GPUs must be free at once.")
    host: str | None = Field(None, max_length=64, description="The host (default: the member's own).")
    hours: float | None = Field(
        None,
        gt=0,
        le=24 * 14,
        description="Stop waiting after this many hours (default: gpu_free_request_hours).",
    )
    member: str | None = Field(
        None, max_length=64, description="Whom to tell (admins only; default: the caller)."
    )


class NoGpuChange(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    no_gpu: bool = Field(
        description="true: detach every GPU from the container (no-GPU mode); false: give them back."
    )


class NoGpuOut(BaseModel):
    """The container after switching no-GPU mode (``gpus.NoGpuOutcome``)."""

    member: str
    no_gpu: bool
    applied: str = Field(
        description="live, at next start, when the container is created (labgpu reconcile), recorded, unchanged."
    )
    notes: list[str] = Field(description="What happened to booked GPUs, if any.")
