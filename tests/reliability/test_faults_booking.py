"""SIGKILL inside the bookings job, when a booking starts and when it ends (GPUs written into a STOPPED
container: this machine has no GPU; the GPUs' PCI addresses come from a recorded NVML reading). The
killed run leaves its lease; the next run after the lease expired (10 minutes: the clock is given)
finishes the attach or detach. Then the invariants: booked GPUs on the container == active bookings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus import _modes as gpu_modes
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._power import set_power
from labgpu.services.members._records import home_dir
from labgpu.services.ops._invariants import Marker, check_invariants
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.test_gpu_bookings import GPUS, RECORDING
from tests.reliability.conftest import Fault
from tests.reliability.harness import BOOKING_STEPS, run_labgpu, steps, write_marker

pytestmark = pytest.mark.integration

START = datetime(2031, 3, 3, 10, 0, tzinfo=UTC)
LEASE = timedelta(minutes=11)  # past the bookings job's lease of 10 minutes


def _job(env: LabgpuEnv, now: datetime, *, kill_after: str | None = None):  # type: ignore[no-untyped-def]
    environ = {**env.env(), "LABGPU_GPU_PASSTHROUGH": "none", "TZ": "UTC"}
    return run_labgpu(
        environ, "jobs", "run-once", "--job", "bookings", "--now", now.isoformat(), "--replay",
        str(RECORDING), kill_after=kill_after,
    )  # fmt: skip


def _booked_member(env: LabgpuEnv) -> tuple[str, dict[str, Marker]]:
    svc = env.services()
    name = unique_name("fb")
    gpu_modes.set_mode(svc, "booked")
    add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    set_power(svc, name, "stop", force=True)
    bookings.book(
        svc, member=name, gpus="0,2", start=START, end=START + timedelta(hours=2),
        now=START - timedelta(hours=1), gpus_on_host=GPUS,
    )  # fmt: skip
    marker = write_marker(home_dir(svc, name), "booking")
    return name, {name: marker}


@pytest.mark.scenario("booking-start")
@pytest.mark.parametrize("step", steps("booking-start", BOOKING_STEPS))
def test_booking_start_killed(labgpu_env: LabgpuEnv, fault: Fault, step: str) -> None:
    name, markers = _booked_member(labgpu_env)
    at = START + timedelta(minutes=5)
    fault.killed(_job(labgpu_env, at, kill_after=step))
    if step == "booking-advanced":  # the checker sees the fault: active in the store, not attached
        before = check_invariants(labgpu_env.services(), owners={name})
        assert [v.invariant for v in before.violations] == ["bookings"], before.violations
    fault.recover(_job(labgpu_env, at + LEASE))
    svc = labgpu_env.services()
    fault.check(svc, markers=markers, owners={name})
    devices = svc.runtime.instances.get(name).devices
    assert {d for d in devices if d.startswith("booked-gpu")} == {"booked-gpu0", "booked-gpu2"}


@pytest.mark.scenario("booking-end")
@pytest.mark.parametrize("step", steps("booking-end", BOOKING_STEPS))
def test_booking_end_killed(labgpu_env: LabgpuEnv, fault: Fault, step: str) -> None:
    name, markers = _booked_member(labgpu_env)
    fault.recover(_job(labgpu_env, START + timedelta(minutes=5)))  # started, GPUs attached
    at = START + timedelta(hours=2)
    fault.killed(_job(labgpu_env, at, kill_after=step))
    fault.recover(_job(labgpu_env, at + LEASE))
    svc = labgpu_env.services()
    fault.check(svc, markers=markers, owners={name})
    assert not [d for d in svc.runtime.instances.get(name).devices if d.startswith("booked-gpu")]
