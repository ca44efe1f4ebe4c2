"""A host's daemon restarts, for real: `host init` restarting the daemon after a subuid/subgid change, and a
simulated reboot (daemon and portal killed, then the units' commands). Named test_zz_* to run after the other
integration tests, and `serial`: both take the shared daemon away for a few seconds.

Like test_zz_daemon_restart, they run where nothing else shares the daemons (scripts/test and CI set
LABGPU_REQUIRE_DAEMONS=1) or with LABGPU_TEST_DAEMON_RESTART=1, and are skipped otherwise.
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
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labgpu.runtime.client import RuntimeClient
from labgpu.services.members._ssh import wait_for_ssh
from tests.conftest import Cleanup, LabgpuEnv, fake_sysctl, unique_name
from tests.integration.sshutil import make_key

pytestmark = [pytest.mark.integration, pytest.mark.serial]

LABGPU = [sys.executable, "-m", "labgpu.cli"]
ROOT = Path(__file__).resolve().parents[2]
# Members' uids for the restart test: a range no other test and no start-daemons run gives root.
RANGE_BASE, RANGE_COUNT = 61000, 1000


@pytest.fixture
def restart_allowed() -> None:
    if (
        os.environ.get("LABGPU_TEST_DAEMON_RESTART") != "1"
        and os.environ.get("LABGPU_REQUIRE_DAEMONS") != "1"
    ):
        pytest.skip("restarts the shared daemon: set LABGPU_TEST_DAEMON_RESTART=1 (scripts/test does)")


@pytest.fixture
def fresh_range() -> Iterator[str]:
    """root's /etc/subuid and /etc/subgid without the test range (the daemon has never read it), put back
    as they were afterwards (a range the daemon may map and nobody uses is harmless until it restarts)."""
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
    restart_allowed: None,
    fresh_range: str,
    labgpu_env: LabgpuEnv,
    runtime: RuntimeClient,
    busybox_image: str,
    test_profile: str,
    cleanup: Cleanup,
    tmp_path: Path,
) -> None:
    from labgpu.services.hosts import StepStatus, init_host
    from labgpu.services.hosts._setup import HostPaths
    from labgpu.services.members._add import add_member, validate_request

    # An instance that runs across the restart.
    bystander = cleanup.instance(unique_name("keep"))
    runtime.instances.create(bystander, image=busybox_image, profiles=[test_profile], start=True)
    before = runtime.instances.state(bystander).pid
    old_pid = _server_pid(runtime)

    profile = cleanup.profile(unique_name("lgrs"))
    labgpu_env.overrides.update(
        uid_base=str(RANGE_BASE), uid_count=str(RANGE_COUNT), profile_name=profile, network_mode="none"
    )
    settings = labgpu_env.settings()
    report = init_host(runtime, settings, paths=HostPaths(sysctl_root=fake_sysctl(tmp_path / "sysctl")))
    steps = {s.step: s for s in report.steps}
    assert steps["subuid"].status == StepStatus.CREATED and fresh_range in Path("/etc/subuid").read_text()
    restart = steps["daemon restart"]
    assert restart.status == StepStatus.CHANGED, restart.detail
    assert "kept running" in restart.detail
    print(f"{runtime.server().kind}: {restart.detail}")

    assert _server_pid(runtime) != old_pid
    state = runtime.instances.state(bystander)
    assert state.status == "Running" and state.pid == before  # the same process: never stopped

    # A member in the new range: the home is uid-mapped by the daemon that was running before host init.
    labgpu_env.overrides["profile_name"] = test_profile
    svc = labgpu_env.services()
    key = make_key(tmp_path, "k")
    sheet = add_member(
        svc, validate_request(svc, name=unique_name("rm"), ssh_keys=[Path(f"{key}.pub").read_text()])
    )
    inst = runtime.instances.get(sheet.container)
    assert inst.status == "Running"
    assert f"{RANGE_BASE}" in inst.config.get("raw.idmap", "")


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


def _wait(check: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
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


# One daemon kind: the restart itself is what test_zz_daemon_restart and the test above do on both, and
# the serial part of the suite runs alone (every second of it counts in CI).
@pytest.mark.parametrize("daemon_kind", ["incus"], indirect=True, scope="session")
def test_after_a_reboot_the_portal_jobs_and_containers_are_back(
    restart_allowed: None, labgpu_env: LabgpuEnv, runtime: RuntimeClient, daemon_kind: str, tmp_path: Path
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    web_port, agent_port = _free_port(), _free_port()
    labgpu_env.overrides.update(web_port=str(web_port), agent_port=str(agent_port), agent_host="127.0.0.1")
    env = labgpu_env.env()
    svc = labgpu_env.services()
    key = make_key(tmp_path, "k")
    sheet = add_member(
        svc, validate_request(svc, name=unique_name("rb"), ssh_keys=[Path(f"{key}.pub").read_text()])
    )
    units = _unit_commands()
    procs: list[subprocess.Popen[bytes]] = []

    def start(unit: str) -> None:
        log = (tmp_path / f"{unit}.log").open("ab")
        procs.append(subprocess.Popen(units[unit], env=env, stdout=log, stderr=subprocess.STDOUT))

    try:
        # The portal before the reboot, without its job runner: then every job is due when the portal comes
        # back, and the first run shows that its jobs are back too (no minute's wait for the next one).
        procs.append(
            subprocess.Popen(
                units["labgpu-serve.service"],
                env={**env, "LABGPU_JOBS_IN_SERVE": "false"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        _wait(lambda: _answers(f"http://127.0.0.1:{web_port}/healthz"), "the portal")

        # The "reboot": the member's container stops with the host, the daemon and the portal die.
        assert _last_runs(env).get("bookings") is None
        runtime.instances.stop(sheet.container, force=True)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(timeout=30)
        os.kill(_server_pid(runtime), signal.SIGKILL)
        runtime.close()

        # The host comes up: its init starts the daemon (scripts/start-daemons here, no systemd), then
        # labgpu's units: boot (oneshot, first), the portal with its jobs, the agent.
        up = subprocess.run(
            [str(ROOT / "scripts/start-daemons"), daemon_kind], capture_output=True, text=True, timeout=300
        )
        assert up.returncode == 0, up.stdout + up.stderr
        boot = subprocess.run(
            units["labgpu-boot.service"], env=env, capture_output=True, text=True, timeout=600
        )
        assert boot.returncode == 0, boot.stdout + boot.stderr
        start("labgpu-serve.service")
        start("labgpu-agent.service")

        assert runtime.instances.get(sheet.container).status == "Running"
        wait_for_ssh("127.0.0.1", sheet.ports["ssh"], timeout=120)
        _wait(lambda: _answers(f"http://127.0.0.1:{web_port}/healthz"), "the portal")
        _wait(lambda: _answers(f"http://127.0.0.1:{agent_port}/healthz"), "the GPU agent")

        _wait(lambda: _last_runs(env).get("bookings") is not None, "the jobs (run by the portal)")
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
