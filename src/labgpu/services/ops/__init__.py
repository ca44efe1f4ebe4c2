"""ops: keeping a lab running.

``reconcile`` (bring the daemons to the store's desired state, repair interrupted work), invariants, the
job runner (bookings, idle GPUs, reconcile on a schedule), ``boot`` (after a host restart), backups and
restores, ``health`` for ``/healthz``, and ``setup`` (a fresh host, from an installed package). The public face of ``services/ops``; it may use every other
feature, and none uses it.
"""

from __future__ import annotations

from labgpu.services.ops._backup_index import list_backups
from labgpu.services.ops._backups import create_backup
from labgpu.services.ops._boot import boot, ensure_gpu_devices
from labgpu.services.ops._health import Health, health
from labgpu.services.ops._invariants import check_invariants
from labgpu.services.ops._jobs import (
    FAILED,
    JOBS,
    NOT_DUE,
    OK,
    JobRunInfo,
    job_runs,
    job_status,
    run_once,
    start_job_runner,
)
from labgpu.services.ops._reconcile import ReconcileReport, reconcile
from labgpu.services.ops._restore import restore_backup
from labgpu.services.ops._setup import SetupReport, SetupStep, setup

__all__ = [
    "FAILED",
    "JOBS",
    "NOT_DUE",
    "OK",
    "Health",
    "JobRunInfo",
    "ReconcileReport",
    "SetupReport",
    "SetupStep",
    "boot",
    "check_invariants",
    "create_backup",
    "ensure_gpu_devices",
    "health",
    "job_runs",
    "job_status",
    "list_backups",
    "reconcile",
    "restore_backup",
    "run_once",
    "setup",
    "start_job_runner",
]
