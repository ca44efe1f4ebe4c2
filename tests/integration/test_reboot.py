"""A host's daemon restarts for real, on labgpu's own standalone Incus daemon f1 (never the shared ones):

- `host init` on a host whose daemon already runs adds subuid/subgid ranges and restarts the daemon itself,
  its instances keep running, and a member's home is uid-mapped at once;
- a simulated reboot (the member's container stops with the host, the daemon and the portal are killed,
  then the host's init starts the daemon and labgpu's units run) brings the portal, its jobs, the agent
  and the member's container with its SSH port back.

f1 runs in its own network namespace (scripts/start-test-cluster), like another machine: `host init` runs
there too (``nsenter --net``), as it would on that machine, so that the daemon it restarts stays in it. The
tests share the lane "f1" with the fault suite, which restarts f1 as well (tests/lanes.py): they run one
after another on one worker while the rest of the suite runs beside them, and nothing else uses f1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from labgpu.runtime.client import RuntimeClient
from labgpu.services.members._ssh import wait_for_ssh
from tests.conftest import Cleanup, LabgpuEnv, fake_sysctl, unique_name
from tests.integration.sshutil import make_key
from tests.reliability.test_faults_daemon import F1_ADDRESS, F1_DIR, f1, f1_env

__all__ = ["f1", "f1_env"]  # fixtures, used by name

pytestmark = [pytest.mark.integration, pytest.mark.lane("f1")]

LABGPU = [sys.executable, "-m", "labgpu.cli"]
ROOT = Path(__file__).resolve().parents[2]
F1_NETNS = "/var/run/netns/lgmh-f1"
# Members' uids for the restart test: a range no other test and no start-daemons run gives root.
RANGE_BASE, RANGE_COUNT = 61000, 1000

# `host init` as labgpu on f1's machine runs it: in f1's network namespace, with a stand-in for /proc/sys
# (the kernel limits of the machine running the tests are not changed). Its report comes back as JSON.
HOST_INIT = """
import json, sys
from pathlib import Path
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.hosts import init_host
from labgpu.services.hosts._setup import HostPaths
from labgpu.settings import load_settings

settings = load_settings()
runtime = RuntimeClient(Endpoint.unix(Path(sys.argv[1])), timeout=30, operation_timeout=300)
report = init_host(runtime, settings, paths=HostPaths(sysctl_root=Path(sys.argv[2])))
print(json.dumps({s.step: [s.status.value, s.detail] for s in report.steps}))
"""


@pytest.fixture
def fresh_range() -> Iterator[str]:
    """root's /etc/subuid and /etc/subgid without the test range (f1 has not read it), put back as they
    were afterwards (a range a daemon may map and nobody uses is harmless)."""
    line = f"root:{RANGE_BASE}:{RANGE_COUNT}"
    saved = {p: p.read_text() for p in (Path("/etc/subuid"), Path("/etc/subgid"))}
    for path, text in saved.items():
        path.write_text("".join(f"{x}\n" for x in text.splitlines() if x.strip() != line))
    try:
        yield line
    finally:
        for path, text in saved.items():
            path.write_text(text)


def _server_pid(runtime: RuntimeClient) -> int:
    runtime.close()
    return int(runtime.server(refresh=True).raw["environment"]["server_pid"])


def test_host_init_restarts_the_daemon_so_homes_map_at_once(
    fresh_range: str, f1_env: LabgpuEnv, f1: RuntimeClient, tmp_path: Path
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    # An instance that runs across the restart.
    cleanup = Cleanup(f1)
    bystander = cleanup.instance(unique_name("keep"))
    profile = cleanup.profile(unique_name("lgrs"))
    try:
        f1.instances.create(bystander, image="labgpu-test-busybox", profiles=["default"], start=True)
        before = f1.instances.state(bystander).pid
        old_pid = _server_pid(f1)

        f1_env.overrides.update(
            uid_base=str(RANGE_BASE), uid_count=str(RANGE_COUNT), profile_name=profile, network_mode="none"
        )
        done = subprocess.run(
            ["nsenter", f"--net={F1_NETNS}", sys.executable, "-c", HOST_INIT, str(F1_DIR / "unix.socket"),
             str(fake_sysctl(tmp_path / "sysctl"))],
            env=f1_env.env(), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        steps = json.loads(done.stdout.strip().splitlines()[-1])
        assert steps["subuid"][0] == "created" and fresh_range in Path("/etc/subuid").read_text()
        status, detail = steps["daemon restart"]
        assert status == "changed", detail
        assert "kept running" in detail
        print(f"incus (f1): {detail}")

        new_pid = _server_pid(f1)
        assert new_pid != old_pid
        # Still in f1's network namespace: restarted the way it runs, not moved into labgpu's.
        assert os.stat(f"/proc/{new_pid}/ns/net").st_ino == os.stat(F1_NETNS).st_ino
        state = f1.instances.state(bystander)
        assert state.status == "Running" and state.pid == before  # the same process: never stopped

        # A member in the new range: the home is uid-mapped by the daemon that ran before host init.
        svc = f1_env.services()
        key = make_key(tmp_path, "k")
        name = unique_name("rm")
        sheet = add_member(svc, validate_request(svc, name=name, ssh_keys=[Path(f"{key}.pub").read_text()]))
        inst = f1.instances.get(sheet.container)
        assert inst.status == "Running"
        assert f"{RANGE_BASE}" in inst.config.get("raw.idmap", "")
        # A file the member makes in the home belongs to the member's uid on the host.
        made = f1.instances.exec(
            sheet.container, ["touch", f"/home/ubuntu/{name}/made-inside"], user=1000, group=1000
        )
        assert made.exit_code == 0, made
        assert (Path(sheet.home) / "made-inside").stat().st_uid == os.stat(sheet.home).st_uid >= RANGE_BASE
    finally:
        cleanup.run()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unit_commands() -> dict[str, list[str]]:
    """The ExecStart of each unit `labgpu host install-services` writes, for this Python."""
    from labgpu.system.systemd import render_units

    out = {}
    for name, text in render_units(LABGPU).items():
        (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
        out[name] = shlex.split(line.removeprefix("ExecStart="))
    return out


def _wait(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not back within {timeout:g}s")
        time.sleep(0.5)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _last_runs(env: dict[str, str]) -> dict[str, str | None]:
    done = subprocess.run([*LABGPU, "jobs", "status", "--json"], env=env, capture_output=True, text=True)
    return {r["name"]: r["last_started_at"] for r in json.loads(done.stdout or "[]")}


def test_after_a_reboot_the_portal_jobs_and_containers_are_back(
    f1_env: LabgpuEnv, f1: RuntimeClient, tmp_path: Path
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    web_port, agent_port = _free_port(), _free_port()
    f1_env.overrides.update(
        web_port=str(web_port), agent_port=str(agent_port), agent_host="127.0.0.1", apps_port="0"
    )
    env = f1_env.env()
    svc = f1_env.services()
    key = make_key(tmp_path, "k")
    sheet = add_member(
        svc, validate_request(svc, name=unique_name("rb"), ssh_keys=[Path(f"{key}.pub").read_text()])
    )
    units = _unit_commands()
    procs: list[subprocess.Popen[bytes]] = []

    def start(unit: str, **extra: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{unit}.log").open("ab")
        proc = subprocess.Popen(units[unit], env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        # The portal before the reboot, without its job runner: then every job is due when the portal comes
        # back, and the first run shows that its jobs are back too (no minute's wait for the next one).
        portal = start("labgpu-serve.service", LABGPU_JOBS_IN_SERVE="false")
        _wait(lambda: _answers(f"http://127.0.0.1:{web_port}/healthz"), "the portal")

        # The "reboot": the member's container stops with the host, the daemon and the portal die.
        assert _last_runs(env).get("bookings") is None
        f1.instances.stop(sheet.container, force=True)
        portal.send_signal(signal.SIGKILL)
        portal.wait(timeout=30)
        os.kill(_server_pid(f1), signal.SIGKILL)
        f1.close()

        # The host comes up: its init starts the daemon (scripts/start-test-cluster for f1 here), then
        # labgpu's units: boot (oneshot, first), the portal with its jobs, the agent.
        up = subprocess.run(
            [str(ROOT / "scripts/start-test-cluster"), "start", "f1"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        boot = subprocess.run(
            units["labgpu-boot.service"], env=env, capture_output=True, text=True, timeout=600
        )
        assert boot.returncode == 0, boot.stdout + boot.stderr
        start("labgpu-serve.service")
        start("labgpu-agent.service")

        assert f1.instances.get(sheet.container).status == "Running"
        wait_for_ssh(F1_ADDRESS, sheet.ports["ssh"], timeout=120)
        _wait(lambda: _answers(f"http://127.0.0.1:{web_port}/healthz"), "the portal")
        _wait(lambda: _answers(f"http://127.0.0.1:{agent_port}/healthz"), "the GPU agent")
        _wait(lambda: _last_runs(env).get("bookings") is not None, "the jobs (run by the portal)")
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
