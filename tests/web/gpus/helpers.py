"""GPU fixtures for the portal tests: a REAL `labgpu agent` (create_agent_app) served by uvicorn on a free
loopback port in a thread, fed by the named fake RecordedNvml replaying tests/fixtures/gpu/nvml/four-gpus.json
over a /proc tree built from the captured cgroup files; and a portal whose settings carry the agent's token,
with a host in booked mode whose agent_url points at it, and members with containers on it.

No GPU and no LXD/Incus daemon are needed: the portal's runtime points at a socket that does not exist, so
the GPUs members may book come from the agent (the runtime's resources API is unreachable)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy import select

from labgpu.gpu.agent import create_agent_app
from labgpu.gpu.fake import RecordedNvml, load_scenario, write_proc_tree
from labgpu.gpu.inventory import take_inventory
from labgpu.store.models import Host, HostKind, Member, Role
from tests.web.conftest import Portal

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "gpu"
RECORDING = FIXTURES / "nvml" / "four-gpus.json"
AGENT_TOKEN = "agent-token-" + "k" * 32
OWNERS = {
    ("default", "cap-sd-046365"): "alice",
    ("default", "cap-bb-3460c4"): "bob",
    ("default", "cap-bb-046365"): "carol",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServedAgent:
    url: str
    token: str
    source: RecordedNvml


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot take signals
        pass


@contextmanager
def serve_agent(tmp_path: Path, token: str = AGENT_TOKEN) -> Iterator[ServedAgent]:
    """`labgpu agent` over the recorded 4-GPU host, with a token, on http://127.0.0.1:PORT."""
    source, procs = load_scenario(RECORDING)
    proc = write_proc_tree(tmp_path / "agent-proc", procs)
    app = create_agent_app(
        sweep=lambda: take_inventory(source, owners=OWNERS, proc_root=proc), token=token, min_interval=0
    )
    port = free_port()
    # log_config=None: uvicorn's default one is dictConfig'd process-wide and stops its loggers from
    # propagating, so a later test would no longer capture a served portal's access log.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", log_config=None, lifespan="off"
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name="test-agent")
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the agent did not start")
        time.sleep(0.02)
    try:
        yield ServedAgent(url=f"http://127.0.0.1:{port}", token=token, source=source)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


PortalFactory = Callable[..., Portal]


def no_nvml() -> RecordedNvml:
    """FAKE: this machine as a host without the NVIDIA driver (whatever machine the tests run on)."""
    return RecordedNvml(
        unavailable="NVML library libnvidia-ml.so.1 not found: the NVIDIA driver is not installed"
    )


def add_host(
    portal: Portal,
    name: str = "gpu1",
    *,
    mode: str = "booked",
    agent_url: str | None = None,
    url: str | None = None,
) -> int:
    with portal.svc.session() as session:
        host = Host(name=name, url=url, kind=HostKind.LXD, gpu_mode=mode, agent_url=agent_url)
        session.add(host)
        session.flush()
        return host.id


def add_member(portal: Portal, name: str, host_id: int | None, *, role: Role = Role.MEMBER) -> None:
    """A portal account whose container lives on ``host_id`` (as `member add` would leave it)."""
    portal.add_account(name, role=role)
    if host_id is None:
        return
    with portal.svc.session() as session:
        member = session.scalars(select(Member).where(Member.name == name)).one()
        member.host_id = host_id
        member.container = name
        member.gpu_spec = "none"


def lab(make: PortalFactory, agent: ServedAgent, **overrides: Any) -> tuple[Portal, int]:
    """A portal with host gpu1 (booked mode, its agent at ``agent``), members alice, bob, carol with
    containers there, and the admin boss."""
    portal = make(**overrides)
    host_id = add_host(portal, agent_url=agent.url)
    for name in ("alice", "bob", "carol"):
        add_member(portal, name, host_id)
    add_member(portal, "boss", None, role=Role.ADMIN)
    return portal, host_id
