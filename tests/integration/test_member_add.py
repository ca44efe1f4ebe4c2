"""`labgpu member add` end to end: real daemon, real SSH client, real host folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LabgpuEnv
from tests.integration.sshutil import change_expired_password, make_key, ssh_key, ssh_password

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env.env(), capture_output=True, text=True, timeout=600)


def test_member_add_gives_ssh_with_key_password_change_sudo_and_home(
    labgpu_env: LabgpuEnv, tmp_path: Path
) -> None:
    key = make_key(tmp_path, "alice")
    r = labgpu(labgpu_env, "member", "add", "alice", "--ssh-key", f"{key}.pub", "--json")
    assert r.returncode == 0, r.stderr
    sheet = json.loads(r.stdout)
    assert {"name", "container", "host", "state", "ssh", "ports", "home", "initial_password"} <= set(sheet)
    assert sheet["ssh"]["user"] == "ubuntu" and sheet["ssh"]["host"] == "127.0.0.1"
    port, password = sheet["ssh"]["port"], sheet["initial_password"]
    assert len(password) >= 12

    # The initial password works but must be changed first, for key logins too.
    forced = ssh_password(password, port, "true")
    assert forced.returncode != 0
    assert "change" in (forced.stdout + forced.stderr).lower()
    transcript = change_expired_password(port, password, "Lab-gpu-2026-new", key=key)
    assert "password" in transcript.lower()

    # Now the key logs in without a prompt; sudo takes the new password; the home is the member's.
    home_in = "/home/ubuntu/alice"
    r = ssh_key(
        key,
        port,
        f"id -un; echo 'Lab-gpu-2026-new' | sudo -S -p '' id -u; echo data > {home_in}/from-inside.txt; hostname",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ubuntu", "0", "alice"]
    host_file = Path(sheet["home"]) / "from-inside.txt"
    assert host_file.read_text() == "data\n"
    info = json.loads(labgpu(labgpu_env, "member", "show", "alice", "--json").stdout)
    assert os.stat(host_file).st_uid == info["uid"]
    assert os.stat(sheet["home"]).st_uid == info["uid"]
    assert "initial_password" not in info
    assert info["status"] == "Running"

    # The old password is gone.
    assert ssh_password(password, port, "true").returncode != 0


def test_two_members_cannot_see_each_others_homes(labgpu_env: LabgpuEnv, tmp_path: Path) -> None:
    from labgpu.services.members._add import add_member, validate_request

    svc = labgpu_env.services()
    key_a, key_b = make_key(tmp_path, "a"), make_key(tmp_path, "b")
    a = add_member(svc, validate_request(svc, name="ann", ssh_keys=[Path(f"{key_a}.pub").read_text()]))
    b = add_member(svc, validate_request(svc, name="ben", ssh_keys=[Path(f"{key_b}.pub").read_text()]))
    assert a.ports["ssh"] != b.ports["ssh"]
    (Path(a.home) / "secret.txt").write_text("ann only\n")
    os.chown(Path(a.home) / "secret.txt", os.stat(a.home).st_uid, os.stat(a.home).st_uid)
    for _who, sheet, key in (("ann", a, key_a), ("ben", b, key_b)):
        change_expired_password(
            sheet.ports["ssh"], sheet.initial_password or "", "Another-good-pass-1", key=key
        )
    r = ssh_key(key_b, b.ports["ssh"], "ls /home/ubuntu; cat /home/ubuntu/ann/secret.txt")
    assert "ann" not in r.stdout.split()
    assert r.returncode != 0
    # ann's own key does not open ben's container.
    assert ssh_key(key_a, b.ports["ssh"], "true").returncode != 0
    # On the host, each home is private to its owner.
    assert oct(os.stat(a.home).st_mode & 0o777) == "0o700"
    assert os.stat(a.home).st_uid != os.stat(b.home).st_uid
