"""`member add` killed (SIGKILL) after each provisioning step, then recovered.

For every step in ``PROVISION_STEPS`` the CLI is run as a subprocess with
``LABGPU_FAULT_KILL_AFTER=<step>``, which SIGKILLs it right after that step, as
a power cut would. Recovery alternates between running the same ``member add``
again and ``labgpu reconcile``. Either way there must be exactly one running
container, the ports allocated once, the home folder intact and sshd answering.
One step per daemon also goes through a full SSH login with the key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from labgpu.runtime.client import RuntimeClient
from labgpu.services.members._provision import PROVISION_STEPS
from labgpu.services.members._records import load_member
from labgpu.services.members._ssh import wait_for_ssh
from labgpu.store.models import MemberState, PortMap
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.sshutil import make_key, ssh_key

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]
# Even steps are recovered by the same `member add`, odd ones by `reconcile`, so both ways
# meet a crash early and late in provisioning.
RECOVERY = {step: ("add" if i % 2 == 0 else "reconcile") for i, step in enumerate(PROVISION_STEPS)}
# The step whose recovery is followed by a full login (key, home file).
FULL_LOGIN_STEP = "password"


def labgpu(env: LabgpuEnv, *args: str, kill_after: str | None = None) -> subprocess.CompletedProcess[str]:
    environ = env.env()
    if kill_after is not None:
        environ["LABGPU_FAULT_KILL_AFTER"] = kill_after
    return subprocess.run([*LABGPU, *args], env=environ, capture_output=True, text=True, timeout=600)


def test_recovery_alternates_between_add_and_reconcile() -> None:
    assert set(RECOVERY.values()) == {"add", "reconcile"}
    assert RECOVERY[PROVISION_STEPS[-1]] == "reconcile"  # `member add` of a finished member is refused


@pytest.mark.parametrize("step", PROVISION_STEPS)
def test_killed_after_step_then_recovered(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient, tmp_path: Path, step: str
) -> None:
    name = unique_name("cr")
    key = make_key(tmp_path, "k")
    add = ("member", "add", name, "--ssh-key", f"{key}.pub", "--json")

    killed = labgpu(labgpu_env, *add, kill_after=step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout == ""  # died before the connection sheet

    # Data the member may already have: it must survive the recovery untouched.
    home = Path(labgpu_env.overrides["home_base"]) / name
    marker = home / "before-recovery.txt"
    if home.is_dir():
        marker.write_text(f"written after a crash at {step}\n")

    password: str | None = None
    if RECOVERY[step] == "add":
        r = labgpu(labgpu_env, *add)
        assert r.returncode == 0, r.stderr
        password = json.loads(r.stdout)["initial_password"]
    else:
        r = labgpu(labgpu_env, "reconcile", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        report = json.loads(r.stdout)
        mine = [a for a in report["actions"] if a["member"] == name]
        assert not report["failed"], mine
        if step == "done":
            assert mine == []  # already complete: nothing to repair
        else:
            assert [(a["action"], a["done"]) for a in mine] == [("provision", True)]
            assert "logs in with their SSH key" in mine[0]["detail"]

    # Exactly one container for the member, labgpu's, running.
    owned = [i for i in runtime.instances.all(with_state=False) if i.label("owner") == name]
    assert [(i.name, i.status) for i in owned] == [(name, "Running")]

    # The store: finished, one port map (ssh), allocated once.
    svc = labgpu_env.services()
    with svc.session() as session:
        member = load_member(session, name)
        assert member.state == MemberState.RUNNING
        assert [str(p.purpose) for p in member.port_maps] == ["ssh"]
        port = member.port_maps[0].host_port
        uid = member.uid
        assert session.scalar(select(func.count()).select_from(PortMap)) == 1
        assert session.scalar(select(func.count()).select_from(PortMap).where(PortMap.host_port == port)) == 1
    assert runtime.instances.get(name).devices["labgpu-ssh"]["listen"] == f"tcp:127.0.0.1:{port}"

    # The home: there, the member's, and what was in it is still there.
    assert home.is_dir() and os.stat(home).st_uid == uid
    if step != "desired-state":
        assert marker.read_text() == f"written after a crash at {step}\n"

    wait_for_ssh("127.0.0.1", port, timeout=30)
    if step == FULL_LOGIN_STEP:
        assert password is None  # a member with a key: no admin-known password; the key logs in at once
        r = ssh_key(key, port, f"cat /home/ubuntu/{name}/before-recovery.txt; hostname")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == [f"written after a crash at {step}", name]
