"""No-GPU mode on REAL LXD and Incus daemons, on a machine WITHOUT a GPU.

What is verified here: GPU devices written into a STOPPED member container's config (the daemon accepts
them without the GPU; they would apply at its start) are taken away by no-GPU mode and come back when it is
switched off, read back from the daemon each time; reconcile and the bookings job keep the mode; a booking
that is active meanwhile keeps its GPUs reserved but detached; the way back reattaches them; a RUNNING
container switched to no-GPU mode keeps running. The host's GPUs (index -> PCI address) come from the
recorded NVML reading tests/fixtures/gpu/nvml/four-gpus.json, as in test_gpu_bookings.py. Whether a real GPU
hot-unplugged this way disappears inside the container is NOT verified here (no GPU)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from labgpu.domain.gpus import PASSTHROUGH_NONE
from labgpu.gpu.fake import RecordedNvml
from labgpu.services import gpus
from labgpu.services.context import Actor
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus import _modes as gpu_modes
from labgpu.services.gpus._booking_records import NotAllowed
from labgpu.services.members import apply_spec
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._power import set_power
from labgpu.services.ops._reconcile import reconcile
from labgpu.store.models import AuditEvent, Member
from tests.conftest import LabgpuEnv

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]
RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "nvml" / "four-gpus.json"
GPUS = {g.index: g.pci_address for g in RecordedNvml.from_file(RECORDING).read().gpus}
START = datetime(2031, 1, 6, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABGPU, *args],
        env={**env.env(), "LABGPU_GPU_PASSTHROUGH": "none", "TZ": "UTC"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def gpu_devices(runtime, container: str) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    return {n: d for n, d in runtime.instances.get(container).devices.items() if d.get("type") == "gpu"}


def new_member(env: LabgpuEnv, mode: str) -> str:
    svc = env.services()
    name = f"n{secrets.token_hex(4)}"
    gpu_modes.set_mode(svc, mode)
    add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    return name


def test_no_gpu_mode_takes_assigned_gpus_away_and_gives_them_back(labgpu_env: LabgpuEnv, runtime) -> None:  # type: ignore[no-untyped-def]
    name = new_member(labgpu_env, "assigned")
    svc = labgpu_env.services()
    set_power(svc, name, "stop", force=True)
    # `gpu assign` refuses GPUs this host's daemon does not list; the recorded host's GPUs stand in for them.
    with svc.session() as session:
        session.scalars(select(Member).where(Member.name == name)).one().gpu_spec = "0,2"
    assert apply_spec(svc, name, gpus_on_host=GPUS) == "at next start"
    want = {
        "labgpu-gpu0": {"type": "gpu", "gputype": "physical", "pci": GPUS[0]},
        "labgpu-gpu2": {"type": "gpu", "gputype": "physical", "pci": GPUS[2]},
    }
    assert gpu_devices(runtime, name) == want

    off = gpus.set_no_gpu(svc, name, True, gpus_on_host=GPUS)
    assert (off.no_gpu, off.applied) == (True, "at next start")
    assert gpu_devices(runtime, name) == {}
    # The desired state says so: reconcile does not put them back, and the GPU choice is kept.
    reconcile(svc)
    assert gpu_devices(runtime, name) == {}
    shown = gpus.set_no_gpu(svc, name, True)
    assert shown.applied == "unchanged"
    r = labgpu(labgpu_env, "member", "show", name, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["no_gpu"] is True and json.loads(r.stdout)["gpus"] == "0,2"

    back = gpus.set_no_gpu(svc, name, False, gpus_on_host=GPUS)
    assert (back.no_gpu, back.applied) == (False, "at next start")
    assert gpu_devices(runtime, name) == want
    with svc.session() as session:
        actions = [
            (e.action, (e.detail or {}).get("no_gpu"))
            for e in session.scalars(select(AuditEvent).where(AuditEvent.target == name))
            if e.action.startswith("member.no-gpu")
        ]
    assert actions == [("member.no-gpu", True), ("member.no-gpu", False)]

    # Another member may not; the member themself may (as the portal's actor).
    with pytest.raises(NotAllowed):
        gpus.set_no_gpu(replace(svc, actor=Actor("mallory", is_admin=False)), name, True)
    mine = gpus.set_no_gpu(replace(svc, actor=Actor(name, is_admin=False)), name, True, gpus_on_host=GPUS)
    assert mine.no_gpu is True and gpu_devices(runtime, name) == {}


def test_a_booking_waits_while_no_gpu_mode_is_on(labgpu_env: LabgpuEnv, runtime) -> None:  # type: ignore[no-untyped-def]
    name = new_member(labgpu_env, "booked")
    svc = labgpu_env.services()
    set_power(svc, name, "stop", force=True)

    r = labgpu(labgpu_env, "member", "set", name, "--no-gpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{name}: no GPU" in r.stdout

    bookings.book(
        svc, member=name, gpus="0,2", start=START, end=START + 2 * H, now=START - H, gpus_on_host=GPUS
    )
    r = labgpu(labgpu_env, "jobs", "run-once", "--job", "bookings", "--now", START.isoformat(),
               "--replay", str(RECORDING))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "approved -> active" in r.stdout
    assert f"{name} is in no-GPU mode: booking" in r.stdout and "wait until they switch back" in r.stdout
    assert gpu_devices(runtime, name) == {}  # reserved, not attached: no-GPU mode wins

    back = gpus.set_no_gpu(svc, name, False, gpus_on_host=GPUS)
    assert back.no_gpu is False
    assert any("GPU 0, 2 attached in the config" in n for n in back.notes), back.notes
    assert set(gpu_devices(runtime, name)) == {"booked-gpu0", "booked-gpu2"}

    r = labgpu(labgpu_env, "member", "set", name, "--no-gpu", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["no_gpu"] is True and any("GPU 0, 2 detached" in n for n in out["notes"]), out
    assert gpu_devices(runtime, name) == {}
    # The bookings job's sync sees nothing to attach for them while the mode is on.
    assert gpu_attach.sync_host(svc, gpus_on_host=GPUS, mode=PASSTHROUGH_NONE, members={name}) == []
    assert gpu_devices(runtime, name) == {}


def test_a_running_container_keeps_running_in_no_gpu_mode(labgpu_env: LabgpuEnv, runtime) -> None:  # type: ignore[no-untyped-def]
    name = new_member(labgpu_env, "shared")
    assert runtime.instances.get(name).status == "Running"
    r = labgpu(labgpu_env, "member", "set", name, "--no-gpu")
    assert r.returncode == 0, r.stdout + r.stderr
    assert runtime.instances.get(name).status == "Running"
    assert gpu_devices(runtime, name) == {}
    r = labgpu(labgpu_env, "member", "set", name, "--gpu")
    assert r.returncode == 0 and f"{name}: GPUs on" in r.stdout, r.stdout + r.stderr
    assert runtime.instances.get(name).status == "Running"
    r = labgpu(labgpu_env, "member", "set", "nobody-here", "--gpu")
    assert r.returncode == 2 and "no member named nobody-here" in r.stderr, r.stderr
