"""Booked GPUs on a host other than the local daemon's, on REAL daemons (labgpu's test Incus daemons),
on a machine WITHOUT a GPU.

A member's container is on s1 (a standalone daemon reached over HTTPS, in booked mode). The bookings
job (`labgpu jobs run-once --job bookings`, clock given) writes the booked GPUs into that container ON
s1's daemon, read back from s1; the booking's end removes them; cancelling a running booking and
leaving booked mode detach them through s1 too. A host whose daemon is down is an error naming it, and
s1's GPUs are attached in the same run all the same.

The container is stopped: s1 has no GPU, so a running container would (rightly) be refused the hot-plug
(tests/integration/test_gpu_bookings.py records that answer). The PCI addresses come from a recorded
NVML reading (s1's daemon lists no GPU and s1 has no GPU agent). Whether a real GPU works inside the
container is NOT verified here; see docs/admin/gpus.md.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from labgpu.domain.gpus import PASSTHROUGH_CDI, PASSTHROUGH_NVIDIA_RUNTIME
from labgpu.gpu.fake import RecordedNvml
from labgpu.services.clients import server_cert_path
from labgpu.services.gpus import _attach as gpu_attach
from labgpu.services.gpus import _booking_requests as booking_requests
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus import _modes as gpu_modes
from labgpu.services.hosts._remote import add_host
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._power import set_power
from labgpu.store.models import Host, HostKind, Member
from tests.integration.multihost.conftest import HostsEnv

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]
RECORDING = Path(__file__).resolve().parents[2] / "fixtures" / "gpu" / "nvml" / "four-gpus.json"
GPUS = {g.index: g.pci_address for g in RecordedNvml.from_file(RECORDING).read().gpus}
START = datetime(2031, 1, 6, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
MIN = timedelta(minutes=1)


def labgpu(env: HostsEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABGPU, *args],
        env={**env.env(), "TZ": "UTC"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


def bookings_job(env: HostsEnv, at: datetime) -> subprocess.CompletedProcess[str]:
    return labgpu(
        env, "jobs", "run-once", "--job", "bookings", "--now", at.isoformat(), "--replay", str(RECORDING)
    )


def booked(env: HostsEnv, daemon: str, container: str) -> dict[str, dict[str, str]]:
    """The booked GPU devices of ``container`` as ``daemon`` itself lists them (its unix socket)."""
    devices = env.daemons[daemon].client.instances.get(container).devices
    return {n: d for n, d in devices.items() if n.startswith("booked-gpu")}


def add_down_host(svc: Any, booked_member: str) -> None:
    """A host "down" in booked mode whose daemon does not answer (a closed port; labgpu has its
    pinned certificate, as after `host add`), with a member holding a booking that is due."""
    shutil.copy(server_cert_path(svc.settings, "s1"), server_cert_path(svc.settings, "down"))
    with svc.session() as session:
        host = Host(name="down", url="https://127.0.0.1:1", kind=HostKind.INCUS, gpu_mode="booked")
        session.add(host)
        session.flush()
        session.add(
            Member(name=booked_member, uid=79001, host_id=host.id, container=booked_member, gpu_spec="none")
        )


def test_a_booking_on_a_remote_host_is_attached_and_detached_through_its_daemon(
    hosts_env: HostsEnv,
) -> None:
    hosts_env.overrides["gpu_passthrough"] = "none"  # s1 has no NVIDIA tools; devices are the point here
    svc = hosts_env.services()
    d = hosts_env.daemons
    add_host(svc, "s1", d["s1"].url, token=d["s1"].token())
    gpu_modes.set_mode(svc, "booked", host="s1")
    name = f"gh{secrets.token_hex(3)}"
    add_member(svc, validate_request(svc, name=name, host="s1"), wait_ssh=False)
    hosts_env.instances.append(("s1", name))
    set_power(svc, name, "stop", force=True)
    assert name in d["s1"].instances() and name not in {i.name for i in hosts_env.local.instances.all()}
    other = f"gd{secrets.token_hex(3)}"
    add_down_host(svc, other)

    # `auto` for a daemon on another machine: CDI when it has gpu_cdi, else nvidia.runtime (what the
    # seeds set); never "nothing" because this machine lacks nvidia-container-cli.
    with svc.session() as session:
        s1 = session.scalars(select(Host).where(Host.name == "s1")).one()
    auto = replace(svc, settings=svc.settings.model_copy(update={"gpu_passthrough": "auto"}))
    resolved = gpu_attach.passthrough(auto, s1)
    cdi = d["s1"].client.server(refresh=True).has("gpu_cdi")
    print(f"gpu_passthrough=auto on s1 (gpu_cdi: {cdi}): {resolved}")
    assert resolved == (PASSTHROUGH_CDI if cdi else PASSTHROUGH_NVIDIA_RUNTIME)

    r = labgpu(hosts_env, "gpu", "book", "--gpus", "0,2", "--from", START.isoformat(), "--until", "+2h",
               "--member", name, "--now", (START - H).isoformat(), "--replay", str(RECORDING))  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"on s1 for {name}" in r.stdout
    bookings.book(svc, member=other, gpus="1,", start=START, end=START + H, now=START - H, gpus_on_host=GPUS)

    r = bookings_job(hosts_env, START + 5 * MIN)
    assert r.returncode == 1, r.stdout + r.stderr  # the down host fails the run...
    assert "error: GPUs on down not attached or detached: cannot reach" in r.stdout, r.stdout
    # ...and s1's GPUs are attached in the same run, on s1's daemon.
    assert (
        f"{name} ({name}): GPU 0, 2 attached in the config (the container is stopped: applied at its "
        "next start)" in r.stdout
    ), r.stdout
    assert booked(hosts_env, "s1", name) == {
        "booked-gpu0": {"type": "gpu", "gputype": "physical", "pci": GPUS[0]},
        "booked-gpu2": {"type": "gpu", "gputype": "physical", "pci": GPUS[2]},
    }
    with svc.session() as session:
        session.scalars(select(Host).where(Host.name == "down")).one().gpu_mode = "shared"
    with svc.session() as session:
        for row in session.scalars(select(Member).where(Member.name == other)):
            session.delete(row)  # no container anywhere: nothing for the cleanup to look for

    r = bookings_job(hosts_env, START + 10 * MIN)  # idempotent
    assert r.returncode in (0, 1) and f"{name} (" not in r.stdout, r.stdout
    r = bookings_job(hosts_env, START + 2 * H)
    assert "active -> ended" in r.stdout and f"{name} ({name}): GPU 0, 2 detached in the config" in r.stdout
    assert booked(hosts_env, "s1", name) == {}
    assert d["s1"].client.instances.get(name).status == "Stopped"

    # Cancelling a booking that runs detaches its GPUs at once, through s1's daemon.
    view = bookings.book(svc, member=name, gpus="1,", start=START + 3 * H, end=START + 4 * H,
                         now=START + 2 * H, gpus_on_host=GPUS)  # fmt: skip
    # Attached with gpu_passthrough=auto this time: s1 has no gpu_cdi and no NVIDIA container tools,
    # so its daemon refuses nvidia.runtime=true; that is a note, and the GPUs are attached all the same.
    bookings.advance(svc, now=START + 3 * H)
    (outcome,) = gpu_attach.sync_host(auto, host=s1, source=RecordedNvml.from_file(RECORDING))
    print(f"s1 answered: {outcome.message}")
    assert outcome.applied == gpu_attach.APPLIED_NEXT_START and outcome.attached == (1,)
    if not cdi:
        assert (
            "could not set nvidia.runtime: nvidia.runtime=true needs nvidia-container-cli on the host"
            in outcome.message
        )
    assert set(booked(hosts_env, "s1", name)) == {"booked-gpu1"}
    done = booking_requests.cancel_booking(svc, view.id, now=START + 3 * H + 10 * MIN)
    assert done.ended_early and "GPU 1 detached" in done.note, done.note
    assert booked(hosts_env, "s1", name) == {}

    # Leaving booked mode on s1 ends the booking that runs there and detaches its GPUs from s1.
    bookings.book(svc, member=name, gpus="3,", start=START + 5 * H, end=START + 6 * H, now=START + 4 * H,
                  gpus_on_host=GPUS)  # fmt: skip
    bookings_job(hosts_env, START + 5 * H)
    assert set(booked(hosts_env, "s1", name)) == {"booked-gpu3"}
    report = gpu_modes.set_mode(svc, "shared", host="s1", force=True, now=START + 5 * H + 10 * MIN)
    assert report.cancelled_bookings == 1 and not report.detach_error
    assert [o.detached for o in report.detached] == [(3,)]
    assert booked(hosts_env, "s1", name) == {}
