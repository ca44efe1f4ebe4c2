"""`labgpu member add` and `member reset` show their steps as they happen, against a real daemon.

The CLI runs as a subprocess, as an admin runs it: piped (a log, a script) it prints one plain line per
finished step with its duration; on a terminal the same steps with marks and a spinner; with --json
nothing but the JSON. When `member add` returns, the key logs in at once (no wait for anything else).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from labgpu.runtime.client import RuntimeClient
from labgpu.services.members._records import load_member
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.sshutil import change_expired_password, make_key, ssh_key, ssh_password

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]
STEP_LINE = re.compile(r"^(?P<step>[^:]+): (?P<seconds>\d+\.\d\d)s$")

ADD_STEPS = [
    "placement and desired state",
    "home folder",
    "creating the container",
    "starting the container",
    "SSH keys and login policy, while it boots",
    "waiting for sshd",
    "recording the member as running",
]


def labgpu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env, capture_output=True, text=True, timeout=600)


def steps_of(stdout: str) -> list[str]:
    """The step lines at the top of the output, up to the `total:` line; each has a duration."""
    steps = []
    for line in stdout.splitlines():
        if line.startswith("total: "):
            return steps
        match = STEP_LINE.match(line)
        assert match, f"not a step line: {line!r}\n{stdout}"
        steps.append(match["step"])
    raise AssertionError(f"no total line:\n{stdout}")


def ssh_port(env: LabgpuEnv, name: str) -> int:
    with env.services().session() as session:
        return load_member(session, name).port_maps[0].host_port


def test_member_add_prints_each_step_in_order_and_the_key_works_when_it_returns(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient, tmp_path: Path
) -> None:
    name = unique_name("st")
    key = make_key(tmp_path, "k")
    r = labgpu(labgpu_env.env(), "member", "add", name, "--ssh-key", f"{key}.pub")
    assert r.returncode == 0, r.stderr
    assert steps_of(r.stdout) == ADD_STEPS
    assert "connection sheet" in r.stdout
    # Done means done: the key logs in now, without waiting for anything.
    login = ssh_key(key, ssh_port(labgpu_env, name), "id -un; stat -c '%U %a' ~/.ssh ~/.ssh/authorized_keys")
    assert login.returncode == 0, login.stderr
    assert login.stdout.split("\n")[:3] == ["ubuntu", "ubuntu 700", "ubuntu 600"]
    # The sudo rule is in place too (no password asked).
    assert ssh_key(key, ssh_port(labgpu_env, name), "sudo -n true").returncode == 0

    # Reset: the old container goes first, then the same provisioning steps.
    r = labgpu(labgpu_env.env(), "member", "reset", name, "--yes")
    assert r.returncode == 0, r.stderr
    assert steps_of(r.stdout) == ["checking the template", "deleting the old container", *ADD_STEPS[1:]]
    assert ssh_key(key, ssh_port(labgpu_env, name), "true").returncode == 0


def test_member_add_without_a_key_sets_the_expired_password_after_sshd_and_json_stays_json(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient
) -> None:
    name = unique_name("st")
    r = labgpu({**labgpu_env.env(), "COLUMNS": "200"}, "member", "add", name)  # the sheet's lines unwrapped
    assert r.returncode == 0, r.stderr
    assert steps_of(r.stdout) == [*ADD_STEPS[:-1], "initial password", ADD_STEPS[-1]]
    found = re.search(r"Initial password \(shown once; must be changed at first login\): (\S+)", r.stdout)
    assert found, r.stdout
    # In place and expired when the command returns: the first login changes it.
    port = ssh_port(labgpu_env, name)
    transcript = change_expired_password(port, found[1], "Lab-gpu-2026-steps")
    assert "password" in transcript.lower()
    assert ssh_password("Lab-gpu-2026-steps", port, "id -un").stdout.split() == ["ubuntu"]

    other = unique_name("st")
    r = labgpu(labgpu_env.env(), "member", "add", other, "--json")
    assert r.returncode == 0, r.stderr
    sheet = json.loads(r.stdout)  # nothing but the JSON
    assert sheet["name"] == other and sheet["initial_password"]


def test_on_a_terminal_finished_steps_are_marked(labgpu_env: LabgpuEnv, runtime: RuntimeClient) -> None:
    name = unique_name("st")
    env = {**labgpu_env.env(), "TTY_COMPATIBLE": "1", "COLUMNS": "160"}  # Rich: a terminal, as `ssh -t` gives
    r = labgpu(env, "member", "add", name)
    assert r.returncode == 0, r.stderr
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", r.stdout)
    marked = re.findall(r"✓ (.+?)  \d+\.\d\ds", text)
    assert marked == [*ADD_STEPS[:-1], "initial password", ADD_STEPS[-1]], text
    assert re.search(r"total \d+\.\d\ds", text)
