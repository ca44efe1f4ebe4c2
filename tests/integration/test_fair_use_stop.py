"""Fair use stops REAL processes in a REAL container (LXD and Incus): the GPU job (``gpu-idle``, through
the real job runner, store, notification queue and mail) sees a member break a limit, tells them, and
with ``fair_use_stop`` on, once the grace time has passed, SIGTERMs the offending process inside the
member's container through the daemon's exec. Checked from outside: the host pid is gone, the member's
other process is not; the audit log, the member's mail and the member's usage page say why.

NVML is the only fake (no GPU on these machines): a FAKE recorded reading whose GPU processes are the
host pids of two real ``sleep`` processes started in the container. Time is driven through the job's
clock (``now``), never slept through."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from labgpu.gpu.fake import RecordedNvml
from labgpu.gpu.nvml import GpuProcessSample, GpuSample, NvmlReading
from labgpu.runtime.client import RuntimeClient
from labgpu.services import gpus
from labgpu.services.context import Actor, Services
from labgpu.services.ops import _jobs as jobs
from labgpu.services.portal import _accounts as accounts
from labgpu.settings import load_settings
from labgpu.store import create_engine_for, session_factory, upgrade
from labgpu.store.models import AuditEvent, Booking, BookingStatus, Host, HostKind, Member, Role
from labgpu.web.app import create_app
from tests.conftest import Cleanup, MailBox
from tests.web.conftest import login

pytestmark = pytest.mark.integration

T0 = datetime(2031, 5, 5, 9, 0, tzinfo=UTC)  # the job's clock: given, never waited for
MIN = timedelta(minutes=1)
PASSWORD = "plum-tractor-71-orbit"


@dataclass
class Lab:
    svc: Services
    member: str
    keep: int  # host pid of the process that breaks nothing (GPU 0)
    offend: int  # host pid of the one that breaks the limit (GPU 1)
    offend_in_container: int
    source: RecordedNvml

    def run(self, now: datetime, **overrides: Any) -> jobs.JobRun:
        svc = self.svc
        if overrides:
            svc = Services(
                settings=svc.settings.model_copy(update=overrides),
                runtime=svc.runtime,
                sessions=svc.sessions,
                actor=svc.actor,
            )
        run = jobs.run_job(
            svc, jobs.JOBS["gpu-idle"], now=now, force=True, gpu_source=lambda: self.source, proc_root="/proc"
        )
        assert run.status == "ok", run.as_dict()
        return run

    def audit(self, action: str) -> list[AuditEvent]:
        with self.svc.session() as session:
            return list(
                session.scalars(
                    select(AuditEvent)
                    .where(AuditEvent.action == action, AuditEvent.target == self.member)
                    .order_by(AuditEvent.id)
                )
            )


def _alive(pid: int) -> bool:
    """Whether host pid ``pid`` is a live process (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def _sleeps_under(init: int, timeout: float = 15.0) -> dict[str, int]:
    """The ``sleep`` processes whose parent is ``init`` (host pids), by their command line."""
    deadline = time.monotonic() + timeout
    found: dict[str, int] = {}
    while len(found) < 2 and time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == init and cmdline.startswith("sleep "):
                found[cmdline] = int(entry.name)
        time.sleep(0.1)
    return found


def _pid_in_container(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def _gpu(index: int, pid: int) -> GpuSample:
    return GpuSample(
        index=index,
        uuid=f"GPU-00000000-0000-4000-8000-00000000000{index}",
        pci_bus_id=f"00000000:{0x3B + index:02X}:00.0",
        name="FAKE recorded GPU",
        memory_total=2**34,
        memory_used=2**30,
        utilization=90,
        processes=(GpuProcessSample(pid, 2**30),),
    )


@pytest.fixture
def lab(
    runtime: RuntimeClient,
    daemon_kind: str,
    cleanup: Cleanup,
    busybox_image: str,
    tmp_path: Path,
    smtp_server: MailBox,
) -> Iterator[Lab]:
    member = f"f{secrets.token_hex(4)}"
    cleanup.instance(member)
    runtime.instances.create(member, image=busybox_image, config={"user.labgpu.owner": member}, start=True)
    init = runtime.instances.state(member).pid
    # Two "training jobs" of the member, started the way a member starts one, left running in the background.
    started = runtime.instances.exec(
        member,
        ["sh", "-c", "sleep 3601 </dev/null >/dev/null 2>&1 & sleep 3602 </dev/null >/dev/null 2>&1 &"],
    )
    assert started.ok
    sleeps = _sleeps_under(init)
    assert set(sleeps) == {"sleep 3601", "sleep 3602"}, sleeps
    keep, offend = sleeps["sleep 3601"], sleeps["sleep 3602"]

    settings = load_settings(
        state_dir=str(tmp_path / "state"),
        runtime_url=f"unix://{runtime.endpoint.socket_path}",
        trusted_proxies="",
        jobs_in_serve=False,
        fair_use_grace_minutes=20,
        fair_use_notify_admins=False,
        **smtp_server.settings(),
    )
    engine = create_engine_for(settings)
    upgrade(settings, engine=engine)
    svc = Services(
        settings=settings, runtime=runtime, sessions=session_factory(engine), actor=Actor("root@cli")
    )
    accounts.create_account(svc, name=member, password=PASSWORD, role=Role.MEMBER, email=f"{member}@lab.test")
    with svc.session() as session:
        host = Host(name="gpu1", url=None, kind=HostKind(daemon_kind), gpu_mode="shared")
        session.add(host)
        session.flush()
        session.execute(
            update(Member).where(Member.name == member).values(host_id=host.id, container=member, uid=71001)
        )
    source = RecordedNvml(NvmlReading("550.54.15", "12.4", (_gpu(0, keep), _gpu(1, offend))))
    yield Lab(svc, member, keep, offend, _pid_in_container(offend), source)
    engine.dispose()


def _usage_page(lab: Lab) -> str:
    app = create_app(lab.svc.settings, services=lab.svc, background=False)
    with TestClient(app, client=("192.0.2.30", 40000)) as me:
        assert login(me, lab.member, PASSWORD).status_code == 303
        answer = me.get("/usage")
        assert answer.status_code == 200
        return answer.text


def test_a_member_over_the_gpu_limit_is_told_then_stopped_only_once_the_admin_opts_in(
    lab: Lab, smtp_server: MailBox
) -> None:
    """Shared mode, at most 1 GPU at once: the member's process on a second GPU offends."""
    address = f"{lab.member}@lab.test"
    # Without the opt-in (the default), the violation is recorded and told once, and nothing is stopped,
    # however long it lasts.
    for minutes in (0, 10, 20, 30, 40):
        run = lab.run(T0 + minutes * MIN, fair_use_max_gpus=1)
        assert not any("stopped" in line for line in run.result.lines), run.result.lines
        assert _alive(lab.keep) and _alive(lab.offend)
    (violation,) = lab.audit("fairuse.violation")
    assert violation.detail is not None and violation.detail["kind"] == "gpus"
    assert violation.detail["reason"] == "using 2 GPUs at once, over the limit of 1 (GPUs gpu1/1)"
    assert lab.audit("fairuse.stop") == []
    (told,) = smtp_server.wait_for(address)
    assert told["Subject"] == "GPU fair use: a limit was reached"
    assert "using 2 GPUs at once, over the limit of 1 (GPUs gpu1/1)" in told.get_content()
    assert "are stopped if this lasts" not in told.get_content()  # no stop was announced

    # The admin turns the stop on; the spell began 50 minutes ago, past the 20-minute grace: the process
    # on GPU 1 gets SIGTERM inside the container, the one on GPU 0 (within the limit) is left alone.
    run = lab.run(T0 + 50 * MIN, fair_use_max_gpus=1, fair_use_stop=True)
    assert f"fair use: stopped {lab.member}'s processes {lab.offend_in_container}" in run.result.lines
    assert _wait_gone(lab.offend), f"host pid {lab.offend} still runs after the stop"
    assert _alive(lab.keep)
    (stop,) = lab.audit("fairuse.stop")
    assert stop.actor == "system"  # the job, not a person
    assert stop.detail is not None and stop.detail["pids"] == [lab.offend_in_container]
    assert stop.detail["reason"] == violation.detail["reason"]
    mails = smtp_server.wait_for(address, count=2)
    assert mails[-1]["Subject"] == f"GPU fair use: {lab.member}'s processes were stopped"
    assert f"labgpu stopped processes {lab.offend_in_container} of {lab.member}: using 2 GPUs" in (
        mails[-1].get_content()
    )
    # The member's own page shows both, with the reason.
    events = gpus.fair_use_events(lab.svc, member=lab.member)
    assert [(e.action, e.kind) for e in events] == [("stop", "gpus"), ("violation", "gpus")]
    page = _usage_page(lab)
    assert f"processes stopped: {lab.offend_in_container}" in page
    assert "using 2 GPUs at once, over the limit of 1 (GPUs gpu1/1)" in page


def test_booked_mode_stops_a_process_on_a_gpu_the_member_has_not_booked(
    lab: Lab, smtp_server: MailBox
) -> None:
    """Booked mode: the member booked GPU 0 and also runs on GPU 1. Stop on, grace 20 minutes."""
    with lab.svc.session() as session:
        host = session.scalars(select(Host)).one()
        host.gpu_mode = "booked"
        member_id = session.scalars(select(Member.id).where(Member.name == lab.member)).one()
        session.add(
            Booking(
                member_id=member_id,
                host_id=host.id,
                gpus="0",
                start_at=T0 - 60 * MIN,
                end_at=T0 + 180 * MIN,
                status=BookingStatus.ACTIVE,
            )
        )
    for minutes in (0, 10):
        lab.run(T0 + minutes * MIN, fair_use_stop=True)
        assert _alive(lab.keep) and _alive(lab.offend)  # within the grace time
    (violation,) = lab.audit("fairuse.violation")
    assert violation.detail is not None and violation.detail["kind"] == "unbooked"
    (told,) = smtp_server.wait_for(f"{lab.member}@lab.test")
    assert "processes on GPUs not booked (GPUs gpu1/1)" in told.get_content()
    assert "Processes on these GPUs are stopped if this lasts 20 minutes." in told.get_content()

    run = lab.run(T0 + 20 * MIN, fair_use_stop=True)
    assert f"fair use: stopped {lab.member}'s processes {lab.offend_in_container}" in run.result.lines
    assert _wait_gone(lab.offend)
    assert _alive(lab.keep)  # on the booked GPU
    (stop,) = lab.audit("fairuse.stop")
    assert stop.detail is not None and stop.detail["reason"] == "processes on GPUs not booked (GPUs gpu1/1)"
    assert stop.detail["pids"] == [lab.offend_in_container]
    page = _usage_page(lab)
    assert f"processes stopped: {lab.offend_in_container}" in page
    assert "processes on GPUs not booked (GPUs gpu1/1)" in page
