"""The settings of the members' self-service GPU actions (no-GPU mode, "tell me when GPUs are free"), declared
beside each other. :class:`Settings` (``labgpu.settings``) takes them in as they are:
``gpu_free_request_hours`` is ``LABGPU_GPU_FREE_REQUEST_HOURS`` and so on. Used by
``services/gpus/_free_requests.py``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SelfServiceSettings(BaseModel):
    """ "Tell me when N GPUs are free": how long a request waits, and when a GPU counts as free; see
    docs/admin/gpus.md, "Tell me when GPUs are free"."""

    gpu_free_request_hours: float = Field(
        24,
        gt=0,
        le=24 * 14,
        description="A member's request to be told when GPUs are free ends after this many hours when no "
        "GPUs came free (members may ask for less).",
    )
    gpu_free_minutes: int = Field(
        10,
        ge=1,
        le=24 * 60,
        description="A GPU counts as free for a waiting member when nobody holds it (no booking now or "
        "within the next hour, no assignment) and every utilization sample of this many minutes was below "
        "gpu_idle_threshold with no member's process on it.",
    )
