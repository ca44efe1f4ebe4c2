"""gpus: who uses which GPU, and who may.

The GPU inventory with each process attributed to its member (``GpuUsageReader``), GPU modes (shared,
assigned, booked) and attaching GPUs to containers, bookings and their requests and board, the idle-GPU
rule and its samples. The public face of ``services/gpus``: cli/, web/ and ops import only this module.
"""

from __future__ import annotations

from labgpu.services.gpus._attach import (
    APPLIED_NEXT_START,
    AS_BOOKED,
    NO_CONTAINER,
    REFUSED,
    UNCHANGED,
    AttachOutcome,
    gpu_map,
    sync_host,
)
from labgpu.services.gpus._board import read_board
from labgpu.services.gpus._booking_records import BookingView, active_gpus, format_gpus, prune_slots
from labgpu.services.gpus._booking_requests import (
    cancel_booking,
    gpu_choice,
    local_tz,
    member_host,
    reject_booking,
    request_booking,
    request_extension,
)
from labgpu.services.gpus._bookings import (
    advance,
    approve,
    book,
    cancel,
    extend,
    get_booking,
    list_bookings,
    reject,
    tell_member,
)
from labgpu.services.gpus._cancel import DetachReport, detach_cancelled
from labgpu.services.gpus._holders import idle_gpus
from labgpu.services.gpus._idle import check_idle, prune_samples, sample_agents, sample_gpus
from labgpu.services.gpus._modes import MemberGpus, assign, get_mode, set_mode, unassign
from labgpu.services.gpus._sweep import make_sweep
from labgpu.services.gpus._usage import GpuUsageReader

__all__ = [
    "APPLIED_NEXT_START",
    "AS_BOOKED",
    "NO_CONTAINER",
    "REFUSED",
    "UNCHANGED",
    "AttachOutcome",
    "BookingView",
    "DetachReport",
    "GpuUsageReader",
    "MemberGpus",
    "active_gpus",
    "advance",
    "approve",
    "assign",
    "book",
    "cancel",
    "cancel_booking",
    "check_idle",
    "detach_cancelled",
    "extend",
    "format_gpus",
    "get_booking",
    "get_mode",
    "gpu_choice",
    "gpu_map",
    "idle_gpus",
    "list_bookings",
    "local_tz",
    "make_sweep",
    "member_host",
    "prune_samples",
    "prune_slots",
    "read_board",
    "reject",
    "reject_booking",
    "request_booking",
    "request_extension",
    "sample_agents",
    "sample_gpus",
    "set_mode",
    "sync_host",
    "tell_member",
    "unassign",
]
