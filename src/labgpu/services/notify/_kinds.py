"""The kinds of event labgpu notifies about, each with a label people read (translated on the pages)."""

from __future__ import annotations

from labgpu.errors import N_, BadInput

APPLICATION = "application"  # a new application (to the admins)
APPROVAL = "approval"  # a decision on an application or a booking (to the applicant or member)
BOOKING_START = "booking-start"
BOOKING_END = "booking-end"
BOOKING_REMINDER = "booking-reminder"
IDLE_GPU = "idle-gpu"
LIMIT_REACHED = "limit-reached"
GPU_FREE = "gpu-free"  # GPUs became free for someone waiting for them
WEEKLY_REPORT = "weekly-report"
CONTAINER = "container"  # something happened to the member's container (it moved)
TEST = "test"

# kind -> what the pages call it
KINDS: dict[str, str] = {
    APPLICATION: N_("New applications"),
    APPROVAL: N_("Decisions on applications and bookings"),
    BOOKING_START: N_("Booking started"),
    BOOKING_END: N_("Booking ended"),
    BOOKING_REMINDER: N_("Booking about to start"),
    IDLE_GPU: N_("Idle GPU"),
    LIMIT_REACHED: N_("Fair-use limit reached"),
    GPU_FREE: N_("GPUs free for someone waiting"),
    WEEKLY_REPORT: N_("Weekly usage report"),
    CONTAINER: N_("My container moved or changed"),
    TEST: N_("Test messages"),
}


def check_kinds(kinds: list[str] | tuple[str, ...]) -> list[str]:
    """The kinds, in :data:`KINDS` order, without repeats. Raises BadInput for an unknown one."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise BadInput(
            N_("unknown notification kind %(kind)s: one of %(kinds)s"),
            values={"kind": unknown[0], "kinds": ", ".join(KINDS)},
        )
    return [k for k in KINDS if k in kinds]
