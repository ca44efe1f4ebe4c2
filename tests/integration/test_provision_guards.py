"""Provisioning on a host where things go wrong around labgpu, on real LXD and Incus: a port some other
program listens on is not handed out, and a container that stops while labgpu waits for its sshd fails
the add at once instead of after ssh_ready_timeout."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeNotFound
from tests.conftest import LabgpuEnv, unique_name

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env.env(), capture_output=True, text=True, timeout=900)


def _two_free_ports(start: int, end: int) -> int:
    """The first port of [start, end) that is free with the next one: the test's own range begins there (a
    port of the block may be taken by something else on a busy machine, e.g. another run's container)."""
    for port in range(start, end - 1):
        try:
            for candidate in (port, port + 1):
                with socket.socket() as probe:
                    probe.bind(("0.0.0.0", candidate))  # a probe, closed at once
        except OSError:
            continue
        return port
    raise AssertionError(f"no two free ports in {start}..{end}")


def test_a_port_another_program_listens_on_is_skipped(labgpu_env: LabgpuEnv) -> None:
    first = _two_free_ports(
        int(labgpu_env.overrides["port_range_start"]), int(labgpu_env.overrides["port_range_end"])
    )
    labgpu_env.overrides["port_range_start"] = str(first)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", first))  # say, a student's jupyter on the host
    squatter.listen()
    try:
        name = unique_name("pg")
        r = labgpu(labgpu_env, "member", "add", name, "--json")
        assert r.returncode == 0, r.stderr
        sheet = json.loads(r.stdout)
        assert sheet["ssh"]["port"] == first + 1
        with socket.create_connection(("127.0.0.1", first + 1), timeout=10) as sock:
            sock.settimeout(10)
            assert sock.recv(64).startswith(b"SSH-")  # the member's sshd, through their proxy
    finally:
        squatter.close()


def test_a_container_that_stops_while_sshd_is_awaited_fails_the_add_at_once(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient, busybox_image: str
) -> None:
    # busybox has no sshd: without the check, the add would wait the whole ssh_ready_timeout.
    labgpu_env.overrides["ssh_ready_timeout"] = "900"
    name = unique_name("ds")

    def stop_when_running() -> None:  # as an OOM kill or an init dying at boot would
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if runtime.instances.state(name).status == "Running":
                    time.sleep(1)
                    runtime.instances.stop(name, force=True)
                    return
            except RuntimeNotFound:
                pass
            time.sleep(0.2)

    stopper = threading.Thread(target=stop_when_running, daemon=True)
    stopper.start()
    started = time.monotonic()
    r = labgpu(labgpu_env, "member", "add", name, "--template", busybox_image)
    took = time.monotonic() - started
    stopper.join(5)
    assert r.returncode == 1, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(
        f"error: container {name} stopped while labgpu waited for its sshd (status: Stopped)"
    )
    assert f"info {name} --show-log" in line
    assert took < 450, f"the add waited {took:.0f}s: the stop was not noticed"
    # The member stays, half-made and resumable; nothing else was made for it.
    info = json.loads(labgpu(labgpu_env, "member", "show", name, "--json").stdout)
    assert info["state"] == "provisioning"
