"""Backup and restore onto a fresh host: a new store and home folder, the container gone from the daemon.
Members, containers (with what was written inside them), homes, port maps and SSH key logins come back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LabgpuEnv, unique_name
from tests.integration.sshutil import make_key, ssh_key

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env.env(), capture_output=True, text=True, timeout=900)


def test_backup_restored_on_a_fresh_host_gives_back_members_containers_and_ssh(
    labgpu_env: LabgpuEnv, tmp_path: Path
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    svc = labgpu_env.services()
    name = unique_name("bk")
    key = make_key(tmp_path, "k")
    sheet = add_member(svc, validate_request(svc, name=name, ssh_keys=[Path(f"{key}.pub").read_text()]))
    port = sheet.ports["ssh"]
    home_in = sheet.container_home
    r = ssh_key(key, port, f"echo in-home > {home_in}/h.txt && echo in-rootfs > /home/ubuntu/c.txt")
    assert r.returncode == 0, r.stderr
    member_uid = os.stat(sheet.home).st_uid

    backups = tmp_path / "backups"
    r = labgpu(
        labgpu_env, "backup", "create", "--homes", "--dest", str(backups), "--compression", "none", "--json"
    )
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)["backup"]
    assert made["containers"] == [sheet.container] and made["homes"] == [name]
    listed = json.loads(labgpu(labgpu_env, "backup", "list", "--dest", str(backups), "--json").stdout)
    assert [b["name"] for b in listed] == [made["name"]]

    # A fresh host: another store and home folder; the container is gone from the daemon.
    runtime = svc.runtime
    runtime.instances.stop(sheet.container, force=True)
    runtime.instances.delete(sheet.container)
    fresh = LabgpuEnv(
        overrides={
            **labgpu_env.overrides,
            "state_dir": str(tmp_path / "fresh-state"),
            "home_base": str(tmp_path / "fresh-home"),
            "home_archive": str(tmp_path / "fresh-archive"),
        },
        runtime=runtime,
    )
    assert json.loads(labgpu(fresh, "member", "list", "--json").stdout) == []

    r = labgpu(fresh, "backup", "restore", str(Path(made["path"])), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    restored = json.loads(r.stdout)
    assert f"container {sheet.container} imported from its backup" in restored["steps"]

    members = json.loads(labgpu(fresh, "member", "list", "--json").stdout)
    assert [(m["name"], m["ports"]["ssh"], m["status"]) for m in members] == [(name, port, "Running")]
    inst = runtime.instances.get(sheet.container)
    assert inst.label("owner") == name
    assert inst.devices["labgpu-ssh"]["listen"] == f"tcp:127.0.0.1:{port}"
    new_home = tmp_path / "fresh-home" / name
    assert inst.devices["labgpu-home"]["source"] == str(new_home)
    assert (new_home / "h.txt").read_text() == "in-home\n"
    assert (new_home / "h.txt").stat().st_uid == member_uid

    # The same key logs in (the container's own accounts came back with it), and both files are there.
    from labgpu.services.members._ssh import wait_for_ssh

    wait_for_ssh("127.0.0.1", port, timeout=120)
    r = ssh_key(key, port, f"cat {home_in}/h.txt /home/ubuntu/c.txt; hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["in-home", "in-rootfs", sheet.container]

    # Restoring again onto a host that has members is refused, one line, nothing changed.
    again = labgpu(fresh, "backup", "restore", made["path"])
    assert again.returncode == 2 and "fresh host" in again.stderr
    assert runtime.instances.get(sheet.container).status == "Running"
