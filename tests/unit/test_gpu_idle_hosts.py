"""GPU samples and idle mails for hosts other than the local daemon's, on a real store: a host with a
`labgpu agent` (the REAL agent app, served in-process over an httpx transport, replaying the recorded
4-GPU reading with the utilization the test sets) is sampled from the agent's inventory, and its idle
booked GPU mailed about; an agent that does not answer (a closed port, over the real network) and a
host without an agent are notes, not a failed job, and their held GPUs are never called idle. The
bookings job visits every host where GPUs may be booked, and a host it cannot reach is an error that
names it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from labgpu.gpu.agent import create_agent_app
from labgpu.gpu.fake import load_scenario, write_proc_tree
from labgpu.gpu.inventory import take_inventory
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus import _modes as gpu_modes
from labgpu.services.gpus._holders import idle_gpus
from labgpu.services.ops import _job_bookings as job_bookings
from labgpu.services.ops import _jobs as jobs
from labgpu.store.models import GpuSample, Host, HostKind, Member
from tests.conftest import MailBox
from tests.unit.gpu_store import GPUS, MIN, T0, GpuStore, H
from tests.unit.test_gpu_idle_service import RECORDING, Utilization, mail_settings

TOKEN = "agent-token-" + "r" * 32
AGENT = "http://gpu2-agent.lab.test:9410"
# The recording's containers, as the agent on gpu2 attributes them (its daemon's owner labels).
OWNERS = {("default", "cap-sd-046365"): "dave", ("default", "cap-bb-3460c4"): "erin"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agents(httpx.BaseTransport):
    """The network as the portal's job sees it: gpu2's agent is the real agent app, served in this
    process; any other address goes over the real network (a closed port refuses)."""

    def __init__(self, served: dict[str, TestClient]) -> None:
        self.served = served
        self.network = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        client = self.served.get(request.url.host)
        if client is None:
            return self.network.handle_request(request)
        answer = client.request(request.method, request.url.path, headers=dict(request.headers))
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[tuple[Utilization, Agents]]:
    """gpu2's GPUs (utilization set by the test) and the transport that reaches its agent."""
    source = Utilization()
    _, procs = load_scenario(RECORDING)
    proc = write_proc_tree(tmp_path / "gpu2-proc", procs)
    app = create_agent_app(
        sweep=lambda: take_inventory(source, owners=OWNERS, proc_root=proc), token=TOKEN, min_interval=0
    )
    with TestClient(app) as client:
        yield source, Agents({"gpu2-agent.lab.test": client})


def add_host(svc, name: str, *, url: str, agent_url: str | None = None, mode: str = "booked") -> int:  # type: ignore[no-untyped-def]
    with svc.session() as session:
        host = Host(name=name, url=url, kind=HostKind.INCUS, gpu_mode=mode, agent_url=agent_url)
        session.add(host)
        session.flush()
        return host.id


def add_member(svc, name: str, host_id: int) -> None:  # type: ignore[no-untyped-def]
    with svc.session() as session:
        uid = 71000 + (session.scalar(select(func.count()).select_from(Member)) or 0)
        session.add(
            Member(
                name=name,
                uid=uid,
                host_id=host_id,
                container=name,
                email=f"{name}@lab.test",
                gpu_spec="none",
            )
        )


def run_minutes(svc, local: Utilization, agents: Agents, start, count: int) -> list[jobs.JobRun]:  # type: ignore[no-untyped-def]
    return [
        jobs.run_job(
            svc,
            jobs.JOBS["gpu-idle"],
            now=start + i * MIN,
            force=True,
            gpu_source=lambda: local,
            agent_transport=agents,
        )
        for i in range(count)
    ]


def test_a_remote_host_with_an_agent_is_sampled_and_its_idle_gpu_mailed(
    gpu_store: GpuStore, smtp_server: MailBox, remote: tuple[Utilization, Agents]
) -> None:
    svc = gpu_store.svc(**mail_settings(smtp_server, agent_token=SecretStr(TOKEN)))
    gpu2_source, agents = remote
    gpu2 = add_host(svc, "gpu2", url="https://10.0.0.2:8443", agent_url=AGENT)
    add_member(svc, "dave", gpu2)
    local = Utilization()  # the local host: every GPU busy
    mine = bookings.book(svc, member="dave", gpus="0,", start=T0, end=T0 + 5 * H, now=T0, gpus_on_host=GPUS)
    bookings.book(svc, member="alice", gpus="0,", start=T0, end=T0 + 5 * H, now=T0, gpus_on_host=GPUS)
    bookings.advance(svc, now=T0)
    gpu2_source.util[0] = 2  # dave's GPU on gpu2 idles

    runs = run_minutes(svc, local, agents, T0, 61)
    assert all(r.status == "ok" for r in runs), [r.result.errors for r in runs if r.status != "ok"]
    assert "gpu2: 4 GPU sample(s) from its GPU agent" in runs[0].result.lines
    # Delivered in the background (notify); dave also hears of his booking.
    smtp_server.wait_for("dave@lab.test", count=2)
    (mail,) = [m for m in smtp_server.to("dave@lab.test") if "idle" in m["Subject"]]
    assert mail["Subject"] == "GPU 0 on gpu2 is idle"
    assert f"booking {mine.id}" in mail.get_content()
    assert [m for m in smtp_server.to("alice@lab.test") if "idle" in m["Subject"]] == []  # GPU 0 here is busy
    assert "told dave: GPU 0" in runs[60].result.lines
    assert "idle: GPU 0 on gpu2 of dave for 60 min" in runs[60].result.lines

    (idle,) = idle_gpus(svc, now=T0 + 60 * MIN)
    assert (idle.host, idle.gpu, idle.member, idle.since) == ("gpu2", 0, "dave", T0)
    with svc.session() as session:
        rows = session.scalars(
            select(GpuSample).where(GpuSample.host_id == gpu2, GpuSample.at == T0 + 60 * MIN)
        ).all()
        by_gpu = {r.gpu_index: r for r in rows}
        assert sorted(by_gpu) == [0, 1, 2, 3]
        # As the local samples: utilization, memory used, the member with the most GPU memory on it.
        assert by_gpu[0].utilization == 2 and by_gpu[1].utilization == 90
        reading = gpu2_source.base.gpus[0]
        assert by_gpu[0].memory_used == reading.memory_used
        assert by_gpu[0].member == "dave"
        local_rows = session.scalar(
            select(func.count()).select_from(GpuSample).where(GpuSample.host_id != gpu2)
        )
        assert local_rows == 4 * 61


def test_an_agent_that_does_not_answer_and_a_host_without_one_are_notes(
    gpu_store: GpuStore, smtp_server: MailBox, remote: tuple[Utilization, Agents]
) -> None:
    svc = gpu_store.svc(**mail_settings(smtp_server, agent_token=SecretStr(TOKEN), gpu_idle_minutes=10))
    _, agents = remote
    closed = f"http://127.0.0.1:{free_port()}"
    add_host(svc, "gpu2", url="https://10.0.0.2:8443", agent_url=AGENT)
    gpu3 = add_host(svc, "gpu3", url="https://10.0.0.3:8443", agent_url=closed)
    add_host(svc, "gpu4", url="https://10.0.0.4:8443")
    add_host(svc, "gpu5", url="https://10.0.0.5:8443", mode="shared")
    add_member(svc, "erin", gpu3)
    bookings.book(svc, member="erin", gpus="1,", start=T0, end=T0 + 5 * H, now=T0, gpus_on_host=GPUS)
    bookings.advance(svc, now=T0)

    runs = run_minutes(svc, Utilization(), agents, T0, 12)
    assert all(r.status == "ok" for r in runs), [r.result.errors for r in runs]
    lines = runs[-1].result.lines
    assert lines[0].startswith("4 GPU sample(s)")  # the local host, from NVML
    assert "gpu2: 4 GPU sample(s) from its GPU agent" in lines
    (gpu3_note,) = [line for line in lines if line.startswith("gpu3:")]
    assert gpu3_note.startswith(f"gpu3: not sampled: the GPU agent at {closed} cannot be reached (")
    assert "not sampled (no GPU agent set; `labgpu host set NAME --agent-url URL`): gpu4, gpu5" in lines
    # No samples from gpu3: erin's booked GPU there is never called idle, and she gets no mail.
    assert [g for g in idle_gpus(svc, now=T0 + 12 * MIN) if g.host == "gpu3"] == []
    assert [m for m in smtp_server.wait_for("erin@lab.test", timeout=2) if "idle" in m["Subject"]] == []
    with svc.session() as session:
        assert (
            session.scalar(select(func.count()).select_from(GpuSample).where(GpuSample.host_id == gpu3)) == 0
        )


def test_the_bookings_job_visits_every_booking_host_and_names_the_one_it_cannot_reach(
    gpu_store: GpuStore,
) -> None:
    svc = gpu_store.svc()
    # Daemons that are not there: gpu1 (the local one) and gpu2, a second daemon on this machine.
    gpu2 = add_host(svc, "gpu2", url="unix:///nonexistent/labgpu-test-gpu2.socket")
    add_host(svc, "gpu3", url="https://10.0.0.3:8443", mode="shared")  # nothing booked: not visited
    add_member(svc, "dave", gpu2)
    view = bookings.book(svc, member="dave", gpus="2,", start=T0, end=T0 + 5 * H, now=T0, gpus_on_host=GPUS)

    (run,) = jobs.run_once(svc, job="bookings", now=T0)
    assert run.status == "failed"
    assert run.result.lines == [f"booking {view.id} (dave, GPU 2): approved -> active"]
    assert [e.split(":")[0] for e in run.result.errors] == [
        "GPUs on gpu1 not attached or detached",
        "GPUs on gpu2 not attached or detached",
    ]
    assert "cannot reach the LXD/Incus daemon" in run.result.errors[1]

    # Leaving booked mode ends the booking; the daemon is down, so its GPUs wait for the job, which
    # keeps visiting gpu2 for a day although it is no longer in booked mode.
    report = gpu_modes.set_mode(svc, "shared", host="gpu2", force=True, now=T0 + H)
    assert report.cancelled_bookings == 1 and report.failed
    assert report.detach_error.startswith("GPUs of the ended bookings not detached from gpu2 yet (")
    assert [h.name for h in job_bookings.booking_hosts(svc, now=T0 + 2 * H)] == ["gpu1", "gpu2"]
    assert [h.name for h in job_bookings.booking_hosts(svc, now=T0 + H + 25 * H)] == ["gpu1"]
