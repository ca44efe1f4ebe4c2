"""The GPUs feature on the command line: `labgpu gpu ...` (list, top, record; modes and bookings) and
`labgpu agent`. Mounted in :mod:`labgpu.cli.main`."""

from __future__ import annotations

from labgpu.cli.gpus import (
    _bookings,  # noqa: F401  (mode ... idle, on the same `gpu` app)
    _free_cli,  # noqa: F401  (notify-free, free-requests, notify-free-cancel, on the same `gpu` app)
    _usage_cli,  # noqa: F401  (usage, limits, on the same `gpu` app)
)
from labgpu.cli.gpus._inventory import agent, app

__all__ = ["agent", "app"]
