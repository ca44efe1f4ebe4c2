"""`labgpu boot` on a real daemon: a container found stopped and without its port map (as after a reboot
with drift) is running again with its port map, and sshd answers through it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labgpu.services.members._ssh import wait_for_ssh
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.sshutil import make_key

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def test_boot_starts_containers_and_puts_port_maps_back(labgpu_env: LabgpuEnv, tmp_path: Path) -> None:
    from labgpu.services.members._add import add_member, validate_request

    svc = labgpu_env.services()
    name = unique_name("bt")
    key = make_key(tmp_path, "k")
    sheet = add_member(svc, validate_request(svc, name=name, ssh_keys=[Path(f"{key}.pub").read_text()]))
    port = sheet.ports["ssh"]

    runtime = svc.runtime
    runtime.instances.stop(sheet.container, force=True)
    runtime.instances.remove_device(sheet.container, "labgpu-ssh")
    assert "labgpu-ssh" not in runtime.instances.get(sheet.container).devices

    done = subprocess.run(
        [*LABGPU, "boot", "--timeout", "60", "--json"],
        env=labgpu_env.env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["devices"]["gpus"] == 0 and not report["devices"]["missing"]  # no GPU on this machine
    done_actions = {(a["member"], a["action"]) for a in report["reconcile"]["actions"] if a["done"]}
    assert {(name, "device"), (name, "start")} <= done_actions

    inst = runtime.instances.get(sheet.container)
    assert inst.status == "Running"
    assert inst.devices["labgpu-ssh"]["listen"] == f"tcp:127.0.0.1:{port}"
    wait_for_ssh("127.0.0.1", port, timeout=120)

    # A second boot finds nothing to do.
    again = subprocess.run(
        [*LABGPU, "boot", "--json"], env=labgpu_env.env(), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr
    assert not [a for a in json.loads(again.stdout)["reconcile"]["actions"] if a["done"]]
