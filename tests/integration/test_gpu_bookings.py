"""Booked GPUs on REAL LXD and Incus daemons, on a machine WITHOUT a GPU.

What can be verified here, and is:

- a booking starting (`labgpu jobs run-once` with the clock given) writes `gpu` devices with the GPUs'
  PCI addresses into a STOPPED member container, read back from the daemon; its end removes them;
  reconcile leaves them alone meanwhile; a mode switch with --force ends the booking and detaches;
- a RUNNING container: the daemon's real answer to a hot-plug of a GPU it does not have, mapped to a
  clear message, and the container's config read back unchanged.

The PCI addresses come from a recorded NVML reading (tests/fixtures/gpu/nvml/four-gpus.json), since
this machine has no GPU. Whether a real GPU hot-plugged this way works inside the container (device
nodes, nvidia-smi, CUDA) is NOT verified here; see docs/admin/gpus.md.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from labgpu.domain.gpus import PASSTHROUGH_NONE
from labgpu.gpu.fake import RecordedNvml
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus import _modes as gpu_modes
from labgpu.services.members import _lifecycle as lifecycle
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._power import set_power
from labgpu.services.members._records import load_member
from labgpu.services.ops._reconcile import reconcile
from labgpu.store.models import Booking, Member
from tests.conftest import LabgpuEnv

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]
RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "nvml" / "four-gpus.json"
# The recording's GPUs, index -> PCI address (what the runtime would list on a GPU host).
GPUS = {g.index: g.pci_address for g in RecordedNvml.from_file(RECORDING).read().gpus}
START = datetime(2031, 1, 6, 10, 0, tzinfo=UTC)  # the clock is always given: no waiting, no real time
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


def at(moment: datetime) -> str:
    return moment.isoformat()


def booked(runtime, container: str) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    return {n: d for n, d in runtime.instances.get(container).devices.items() if n.startswith("booked-gpu")}


def new_member(env: LabgpuEnv) -> str:
    """A member added to a host already in booked mode, without a GPU choice: it starts with no GPUs."""
    svc = env.services()
    name = f"g{secrets.token_hex(4)}"
    gpu_modes.set_mode(svc, "booked")
    sheet = add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    assert any(n.startswith("GPUs: none for now") and "labgpu gpu book" in n for n in sheet.notes)
    with svc.session() as session:
        assert load_member(session, name).gpu_spec == "none"  # not default_gpus ("all")
    return name


def test_a_booking_writes_its_gpus_into_a_stopped_container_and_its_end_removes_them(
    labgpu_env: LabgpuEnv, runtime
) -> None:  # type: ignore[no-untyped-def]
    name = new_member(labgpu_env)
    svc = labgpu_env.services()
    set_power(svc, name, "stop", force=True)

    r = labgpu(labgpu_env, "gpu", "book", "--gpus", "0,2", "--from", at(START), "--until", "+2h",
               "--member", name, "--now", at(START - H), "--replay", str(RECORDING))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "GPU 0,2" in r.stdout and "approved" in r.stdout
    r = labgpu(
        labgpu_env,
        "jobs",
        "run-once",
        "--job",
        "bookings",
        "--now",
        at(START - H),
        "--replay",
        str(RECORDING),
    )
    assert r.returncode == 0, r.stderr
    assert booked(runtime, name) == {}  # not yet

    r = labgpu(labgpu_env, "jobs", "run-once", "--job", "bookings", "--now", at(START + 5 * timedelta(minutes=1)),
               "--replay", str(RECORDING))  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "approved -> active" in r.stdout
    assert "GPU 0, 2 attached in the config (the container is stopped: applied at its next start)" in r.stdout
    assert booked(runtime, name) == {
        "booked-gpu0": {"type": "gpu", "gputype": "physical", "pci": GPUS[0]},
        "booked-gpu2": {"type": "gpu", "gputype": "physical", "pci": GPUS[2]},
    }
    # Idempotent, and the lead's reconcile (which owns labgpu-* devices) leaves booked ones alone.
    r = labgpu(labgpu_env, "jobs", "run-once", "--job", "bookings", "--now", at(START + 10 * timedelta(minutes=1)),
               "--replay", str(RECORDING))  # fmt: skip
    assert r.returncode == 0 and "nothing to start, end, attach or detach" in r.stdout, r.stdout
    reconcile(svc)
    assert set(booked(runtime, name)) == {"booked-gpu0", "booked-gpu2"}

    r = labgpu(
        labgpu_env,
        "jobs",
        "run-once",
        "--job",
        "bookings",
        "--now",
        at(START + 2 * H),
        "--replay",
        str(RECORDING),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "active -> ended" in r.stdout and "GPU 0, 2 detached in the config" in r.stdout
    assert booked(runtime, name) == {}
    assert runtime.instances.get(name).status == "Stopped"

    # Leaving booked mode while a booking runs: refused, then forced (the booking ends, its GPUs go).
    view = bookings.book(svc, member=name, gpus="1,", start=START + 3 * H, end=START + 4 * H, now=START + 2 * H,
                         gpus_on_host=GPUS)  # fmt: skip
    bookings.advance(svc, now=START + 3 * H)
    gpu_attach.sync_host(svc, gpus_on_host=GPUS, mode=PASSTHROUGH_NONE)
    assert set(booked(runtime, name)) == {"booked-gpu1"}
    r = labgpu(labgpu_env, "gpu", "mode", "shared")
    assert r.returncode == 2 and "1 booking(s) on" in r.stderr and "--force" in r.stderr, r.stderr
    r = labgpu(labgpu_env, "gpu", "mode", "shared", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "switched from booked to shared" in r.stdout and "1 booking(s) cancelled" in r.stdout
    assert booked(runtime, name) == {}
    assert bookings.get_booking(svc, view.id).status in ("ended", "cancelled")
    with svc.session() as session:
        assert session.scalars(select(Member.gpu_spec).where(Member.name == name)).one() == "all"


def test_hot_plugging_a_gpu_the_host_lacks_is_refused_and_changes_nothing(
    labgpu_env: LabgpuEnv, runtime
) -> None:  # type: ignore[no-untyped-def]
    name = new_member(labgpu_env)
    svc = labgpu_env.services()
    assert runtime.instances.get(name).status == "Running"
    before = runtime.instances.get(name)
    bookings.book(svc, member=name, gpus="3,", start=START, end=START + H, now=START - H, gpus_on_host=GPUS)

    r = labgpu(
        labgpu_env, "jobs", "run-once", "--job", "bookings", "--now", at(START), "--replay", str(RECORDING)
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "approved -> active" in r.stdout
    assert "the daemon refused to hot-plug (attach) GPU 3 into" in r.stdout
    assert "the daemon cannot find that GPU on the host" in r.stdout
    assert "nothing was changed on the container" in r.stdout
    after = runtime.instances.get(name)
    assert after.devices == before.devices and after.config == before.config
    assert after.status == "Running"

    # The same through the service, to record the daemon's own words.
    (outcome,) = gpu_attach.sync_host(svc, gpus_on_host=GPUS, mode=PASSTHROUGH_NONE)
    assert outcome.applied == gpu_attach.REFUSED and outcome.wanted == (3,)
    print(f"{runtime.server().kind} answered: {outcome.message}")
    assert (
        "Invalid PCI address" in outcome.message or "Failed to detect requested GPU device" in outcome.message
    )

    # Stopped, the same booking is written to the config (applied at the next start) and can go again.
    set_power(svc, name, "stop", force=True)
    (outcome,) = gpu_attach.sync_host(svc, gpus_on_host=GPUS, mode=PASSTHROUGH_NONE)
    assert outcome.applied == gpu_attach.APPLIED_NEXT_START and outcome.attached == (3,)
    assert booked(runtime, name) == {"booked-gpu3": {"type": "gpu", "gputype": "physical", "pci": GPUS[3]}}
    with svc.session() as session:
        booking_id = session.scalars(select(Booking.id)).one()
    assert bookings.cancel(svc, booking_id, now=START + 10 * timedelta(minutes=1)).ended_early
    (outcome,) = gpu_attach.sync_host(svc, gpus_on_host=GPUS, mode=PASSTHROUGH_NONE)
    assert outcome.detached == (3,) and booked(runtime, name) == {}
    assert lifecycle.owned_instance(svc, name, name) is not None

    # Assigned mode on a host without GPUs: assigning goes through `member set --gpus`, which refuses.
    r = labgpu(labgpu_env, "gpu", "mode", "assigned")
    assert r.returncode == 0 and "switched from booked to assigned" in r.stdout, r.stdout + r.stderr
    r = labgpu(labgpu_env, "gpu", "assign", name, "0")
    assert r.returncode == 2 and "this host has no GPU 0" in r.stderr, r.stderr
    r = labgpu(labgpu_env, "gpu", "unassign", name)
    assert r.returncode == 0 and f"{name}: GPUs none -> none: unchanged" in r.stdout, r.stdout + r.stderr
