"""The GPU usage page and GET /api/v1/gpus: every signed-in member sees who uses which GPU on every host,
read from the host's REAL `labgpu agent` (served by uvicorn, replaying a recorded NVML reading) or, for a
host on this machine without an agent, from a sweep in the portal's process. An agent that refuses the
token or cannot be reached, and a host without GPUs, are one line for that host, never a 500. Held GPUs
that idle are marked, with since when."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from labgpu.gpu.fake import load_scenario, write_proc_tree
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus._usage import GpuUsageReader
from labgpu.services.portal import _tokens as api_tokens
from labgpu.services.portal._accounts import Identity
from labgpu.store.models import GpuSample, Host, Member, utcnow
from tests.web.conftest import login
from tests.web.gpus.helpers import (
    RECORDING,
    PortalFactory,
    ServedAgent,
    add_host,
    add_member,
    free_port,
    lab,
)
from tests.web.test_i18n import untranslated

GPUS = {0: "0000:1b:00.0", 1: "0000:3b:00.0", 2: "0000:88:00.0", 3: "0000:b1:00.0"}


def _row(html: str, host: str, gpu: int) -> str:
    start = html.index(f'id="gpu-{host}-{gpu}"')
    return html[start : html.index("</tr>", start)]


def test_a_member_sees_every_members_processes(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    client = portal.client()
    assert login(client, "carol").status_code == 303

    page = client.get("/gpus")
    assert page.status_code == 200
    gpu0, gpu1, gpu3 = _row(page.text, "gpu1", 0), _row(page.text, "gpu1", 1), _row(page.text, "gpu1", 3)
    assert "NVIDIA RTX A6000" in gpu0 and "97%" in gpu0 and "41.0 GiB / 48.0 GiB" in gpu0
    assert "<strong>alice</strong>" in gpu0 and "cap-sd-046365" in gpu0 and "python3" in gpu0
    assert "<strong>bob</strong>" in gpu0 and "torchrun" in gpu0 and "10.7 GiB" in gpu0
    assert "<strong>carol</strong>" in gpu1 and "jupyter-lab" in gpu1
    assert "<strong>host</strong>" in gpu1 and "Xorg" in gpu1  # a host process is shown as the host's
    assert "cap3460c4/cap-pj-3460c4" in gpu3  # a container of another project, labgpu's or not
    assert "no processes" in _row(page.text, "gpu1", 2)
    assert "from the host&#39;s GPU agent" in page.text or "from the host's GPU agent" in page.text

    data = client.get("/api/v1/gpus").json()
    (host,) = data
    assert (host["host"], host["source"], host["available"], host["gpu_mode"]) == (
        "gpu1",
        "agent",
        True,
        "booked",
    )
    assert host["driver_version"] == "550.54.15" and [g["index"] for g in host["gpus"]] == [0, 1, 2, 3]
    procs = {p["pid"]: p for g in host["gpus"] for p in g["processes"]}
    assert procs[41001] == {
        "pid": 41001,
        "command": "python3",
        "where": "container",
        "container": "cap-sd-046365",
        "member": "alice",
        "memory": 30500 * 2**20,
    }
    assert (procs[41004]["where"], procs[41004]["member"], procs[41004]["container"]) == ("host", None, None)


def test_the_api_takes_a_personal_token_and_refuses_visitors(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent
) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    with portal.svc.session() as session:
        member_id = session.scalars(select(Member.id).where(Member.name == "bob")).one()
    token, _ = api_tokens.create_token(
        portal.svc, Identity(member_id, "bob", "member", "token"), name="script", expires_days=1
    )
    bearer = portal.client(headers={"Authorization": f"Bearer {token}"})
    assert bearer.get("/api/v1/gpus").json()[0]["gpus"][0]["processes"][1]["member"] == "bob"
    visitor = portal.client()
    r = visitor.get("/api/v1/gpus")
    assert r.status_code == 401 and r.json()["error"]["reason"] == "login-required"
    page = visitor.get("/gpus", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/gpus"


def test_an_agent_that_refuses_the_token_is_one_line(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent
) -> None:
    portal = gpu_portal(agent_token=None)
    host_id = add_host(portal, agent_url=gpu_agent.url)
    add_member(portal, "alice", host_id)
    client = portal.client()
    assert login(client, "alice").status_code == 303
    (host,) = client.get("/api/v1/gpus").json()
    assert host["available"] is False and host["gpus"] == []
    assert host["message"] == (
        f"the GPU agent at {gpu_agent.url} refused the portal's token: set the same agent_token in the "
        "portal's settings and on gpu1"
    )
    page = client.get("/gpus")
    assert page.status_code == 200 and "refused the portal&#39;s token" in page.text


def test_an_unreachable_agent_and_a_host_without_gpus_do_not_hide_the_others(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent
) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    add_host(portal, "gpu2", url="https://192.0.2.2:8443", agent_url=closed)
    add_host(portal, "gpu3", url="https://192.0.2.3:8443")  # another machine, no agent
    add_host(portal, "cpu1", url="unix:///nonexistent/cpu1.socket")  # this machine: no NVIDIA driver
    client = portal.client()
    assert login(client, "alice").status_code == 303
    hosts = {h["host"]: h for h in client.get("/api/v1/gpus").json()}
    assert hosts["gpu1"]["available"] and len(hosts["gpu1"]["gpus"]) == 4
    assert hosts["gpu2"]["message"].startswith(f"the GPU agent at {closed} cannot be reached (")
    assert hosts["gpu3"]["source"] == "none"
    assert hosts["gpu3"]["message"] == (
        "no GPU agent is set for host gpu3: run `labgpu agent` there and set its address with "
        "`labgpu host set gpu3 --agent-url http://ADDRESS:9410`"
    )
    assert hosts["cpu1"]["source"] == "local"
    assert hosts["cpu1"]["message"].startswith("no NVIDIA GPU on this host (NVML library libnvidia-ml.so.1")
    page = client.get("/gpus")
    assert page.status_code == 200
    for name in ("gpu2", "gpu3", "cpu1"):
        section = page.text[page.text.index(f'id="host-{name}"') :]
        assert 'class="host-message"' in section[: section.index("</section>")]


def test_a_host_on_this_machine_without_an_agent_is_swept_in_process(
    gpu_portal: PortalFactory, tmp_path: Path
) -> None:
    source, procs = load_scenario(RECORDING)
    proc = write_proc_tree(tmp_path / "proc", procs)
    portal = gpu_portal(reader=GpuUsageReader(source=lambda: source, proc_root=proc))
    host_id = add_host(portal, mode="shared")
    add_member(portal, "alice", host_id)
    client = portal.client()
    assert login(client, "alice").status_code == 303
    (host,) = client.get("/api/v1/gpus").json()
    assert (host["source"], host["available"], len(host["gpus"])) == ("local", True, 4)
    # The runtime cannot be reached here: containers are named, their members are not, and it says why.
    first = host["gpus"][0]["processes"][0]
    assert (first["container"], first["member"]) == ("cap-sd-046365", None)
    assert any(w.startswith("members unknown:") for w in host["warnings"])
    assert "everyone" in _row(client.get("/gpus").text, "gpu1", 0)  # shared mode: held by all


def test_holders_and_an_idle_booked_gpu(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, host_id = lab(gpu_portal, gpu_agent)
    now = utcnow()
    start = now.replace(minute=now.minute // 15 * 15, second=0, microsecond=0) - timedelta(hours=3)
    booked = bookings.book(
        portal.svc,
        member="alice",
        gpus="2,",
        start=start,
        end=start + timedelta(hours=6),
        now=start,
        gpus_on_host=GPUS,
    )
    busy = bookings.book(
        portal.svc,
        member="bob",
        gpus="3,",
        start=start,
        end=start + timedelta(hours=6),
        now=start,
        gpus_on_host=GPUS,
    )
    bookings.advance(portal.svc, now=start)
    with portal.svc.session() as session:  # what the gpu-idle job records every minute
        at = start
        while at <= now:
            session.add(GpuSample(host_id=host_id, gpu_index=2, at=at, utilization=0, memory_used=2**30))
            session.add(GpuSample(host_id=host_id, gpu_index=3, at=at, utilization=60, memory_used=2**30))
            at += timedelta(minutes=1)
    client = portal.client()
    assert login(client, "carol").status_code == 303
    gpus = client.get("/api/v1/gpus").json()[0]["gpus"]
    (holder,) = gpus[2]["held_by"]
    assert (holder["member"], holder["booking"]) == ("alice", booked.id)
    assert datetime.fromisoformat(holder["until"]) == start + timedelta(hours=6)
    assert gpus[2]["idle_since"] is not None and gpus[2]["idle_minutes"] >= 60
    assert gpus[3]["held_by"][0]["booking"] == busy.id and gpus[3]["idle_since"] is None
    assert gpus[0]["held_by"] == [] and gpus[0]["idle_since"] is None
    row = _row(client.get("/gpus").text, "gpu1", 2)
    assert 'class="idle"' in row and "idle since" in row and f"booking {booked.id}, until" in row
    assert "alice" in row
    assert "nobody" in _row(client.get("/gpus").text, "gpu1", 0)


def test_the_gpu_page_in_chinese(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    client = portal.client(headers={"Accept-Language": "zh-CN"})
    assert login(client, "alice").status_code == 303
    page = client.get("/gpus")
    assert page.headers["content-language"] == "zh-Hans"
    assert untranslated(page.text) == []
    assert "谁在使用哪块 GPU" in page.text


def test_no_host_yet(gpu_portal: PortalFactory) -> None:
    portal = gpu_portal()
    add_member(portal, "alice", None)
    client = portal.client()
    assert login(client, "alice").status_code == 303
    assert client.get("/api/v1/gpus").json() == []
    assert "No host is known yet" in client.get("/gpus").text
    with portal.svc.session() as session:
        assert session.scalars(select(Host)).first() is None
