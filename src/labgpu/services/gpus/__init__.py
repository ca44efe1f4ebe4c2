"""gpus: who uses which GPU, and who may.

The GPU inventory with each process attributed to its member (``GpuUsageReader``), GPU modes (shared,
assigned, booked) and attaching GPUs to containers, bookings and their requests and board, the idle-GPU
rule and its samples, no-GPU mode and "tell me when GPUs are free", the usage history (samples, rollups, reports) and fair-use limits. The public face of ``services/gpus``: cli/, web/ and ops import only this module.
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
from labgpu.services.gpus._fair_use import (
    FairUseEvent,
    FairUseReport,
    MemberUsageSettings,
    check_fair_use,
    fair_use_events,
    set_usage_settings,
    usage_settings,
)
from labgpu.services.gpus._free_requests import (
    FreeCheck,
    FreeRequestView,
    ask_when_free,
    cancel_free_request,
    check_free_requests,
    list_free_requests,
)
from labgpu.services.gpus._history import marks as rollup_marks
from labgpu.services.gpus._history import prune_usage, roll_up
from labgpu.services.gpus._holders import idle_gpus
from labgpu.services.gpus._idle import check_idle, prune_samples, sample_agents, sample_gpus
from labgpu.services.gpus._modes import MemberGpus, assign, get_mode, set_mode, unassign
from labgpu.services.gpus._no_gpu import NoGpuOutcome, set_no_gpu
from labgpu.services.gpus._notice import send_notice
from labgpu.services.gpus._report import (
    BY,
    UsageLine,
    UsageReport,
    WeeklyReport,
    usage_report,
    weekly_reports,
)
from labgpu.services.gpus._sweep import make_sweep
from labgpu.services.gpus._usage import GpuUsageReader

__all__ = [
    "APPLIED_NEXT_START",
    "AS_BOOKED",
    "BY",
    "NO_CONTAINER",
    "REFUSED",
    "UNCHANGED",
    "AttachOutcome",
    "BookingView",
    "DetachReport",
    "FairUseEvent",
    "FairUseReport",
    "FreeCheck",
    "FreeRequestView",
    "GpuUsageReader",
    "MemberGpus",
    "MemberUsageSettings",
    "NoGpuOutcome",
    "UsageLine",
    "UsageReport",
    "WeeklyReport",
    "active_gpus",
    "advance",
    "approve",
    "ask_when_free",
    "assign",
    "book",
    "cancel",
    "cancel_booking",
    "cancel_free_request",
    "check_fair_use",
    "check_free_requests",
    "check_idle",
    "detach_cancelled",
    "extend",
    "fair_use_events",
    "format_gpus",
    "get_booking",
    "get_mode",
    "gpu_choice",
    "gpu_map",
    "idle_gpus",
    "list_bookings",
    "list_free_requests",
    "local_tz",
    "make_sweep",
    "member_host",
    "prune_samples",
    "prune_slots",
    "prune_usage",
    "read_board",
    "reject",
    "reject_booking",
    "request_booking",
    "request_extension",
    "roll_up",
    "rollup_marks",
    "sample_agents",
    "sample_gpus",
    "send_notice",
    "set_mode",
    "set_no_gpu",
    "set_usage_settings",
    "sync_host",
    "tell_member",
    "unassign",
    "usage_report",
    "usage_settings",
    "weekly_reports",
]
