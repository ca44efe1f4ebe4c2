"""`labgpu member add` end to end: real daemon, real SSH client, real host folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LabgpuEnv
from tests.integration.sshutil import SSH_OPTS, change_expired_password, make_key, ssh_key, ssh_password

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env.env(), capture_output=True, text=True, timeout=600)


def test_member_add_with_a_key_gives_key_logins_at_once_sudo_and_no_password(
    labgpu_env: LabgpuEnv, tmp_path: Path
) -> None:
    key = make_key(tmp_path, "alice")
    r = labgpu(labgpu_env, "member", "add", "alice", "--ssh-key", f"{key}.pub", "--json")
    assert r.returncode == 0, r.stderr
    sheet = json.loads(r.stdout)
    assert {"name", "container", "host", "state", "ssh", "ports", "home"} <= set(sheet)
    assert sheet["ssh"]["user"] == "ubuntu" and sheet["ssh"]["host"] == "127.0.0.1"
    assert sheet["initial_password"] is None  # nobody but the member can log in: no admin-known password
    port = sheet["ssh"]["port"]

    # The key works at once, without a terminal (VS Code Remote-SSH, scp, rsync, scripts), and so does sudo,
    # without any password; the home is the member's.
    home_in = "/home/ubuntu/alice"
    r = ssh_key(key, port, f"id -un; sudo -n id -u; echo data > {home_in}/from-inside.txt; hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ubuntu", "0", "alice"]
    host_file = Path(sheet["home"]) / "from-inside.txt"
    assert host_file.read_text() == "data\n"
    info = json.loads(labgpu(labgpu_env, "member", "show", "alice", "--json").stdout)
    assert os.stat(host_file).st_uid == info["uid"]
    assert os.stat(sheet["home"]).st_uid == info["uid"]
    assert info["status"] == "Running"
    copy = tmp_path / "back.txt"
    scp = subprocess.run(
        ["scp", *SSH_OPTS, "-o", "BatchMode=yes", "-i", str(key), "-P", str(port),
         f"ubuntu@127.0.0.1:{home_in}/from-inside.txt", str(copy)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert scp.returncode == 0, scp.stderr
    assert copy.read_text() == "data\n"
    sync = subprocess.run(
        ["rsync", "-a", "-e", " ".join(["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-i", str(key), "-p", str(port)]),
         str(copy), f"ubuntu@127.0.0.1:{home_in}/synced.txt"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sync.returncode == 0, sync.stderr
    assert (Path(sheet["home"]) / "synced.txt").read_text() == "data\n"
    # No password logs in (there is none) until the member sets one of their own (the portal does this):
    # then it works as it is, for a remote desktop as for SSH, with no forced change.
    assert ssh_password("", port, "true").returncode != 0
    from labgpu.services import members

    members.set_container_password(labgpu_env.services(), "alice", "My-own-pass-2026")
    assert ssh_password("My-own-pass-2026", port, "id -un").stdout.strip() == "ubuntu"


def test_member_add_without_a_key_gives_a_password_to_change_at_first_login(
    labgpu_env: LabgpuEnv, tmp_path: Path
) -> None:
    r = labgpu(labgpu_env, "member", "add", "bob", "--json")
    assert r.returncode == 0, r.stderr
    sheet = json.loads(r.stdout)
    port, password = sheet["ssh"]["port"], sheet["initial_password"]
    assert len(password) >= 12
    # The admin-known initial password has to be changed at its first use; then sudo needs no password.
    forced = ssh_password(password, port, "true")
    assert forced.returncode != 0
    assert "change" in (forced.stdout + forced.stderr).lower()
    transcript = change_expired_password(port, password, "Lab-gpu-2026-new")
    assert "password" in transcript.lower()
    r = ssh_password("Lab-gpu-2026-new", port, "id -un; sudo -n id -u")
    assert r.stdout.split() == ["ubuntu", "0"], r.stderr
    assert ssh_password(password, port, "true").returncode != 0  # the old password is gone


def test_two_members_cannot_see_each_others_homes(labgpu_env: LabgpuEnv, tmp_path: Path) -> None:
    from labgpu.services.members._add import add_member, validate_request

    svc = labgpu_env.services()
    key_a, key_b = make_key(tmp_path, "a"), make_key(tmp_path, "b")
    a = add_member(svc, validate_request(svc, name="ann", ssh_keys=[Path(f"{key_a}.pub").read_text()]))
    b = add_member(svc, validate_request(svc, name="ben", ssh_keys=[Path(f"{key_b}.pub").read_text()]))
    assert a.ports["ssh"] != b.ports["ssh"]
    (Path(a.home) / "secret.txt").write_text("ann only\n")
    os.chown(Path(a.home) / "secret.txt", os.stat(a.home).st_uid, os.stat(a.home).st_uid)
    r = ssh_key(key_b, b.ports["ssh"], "ls /home/ubuntu; cat /home/ubuntu/ann/secret.txt")
    assert "ann" not in r.stdout.split()
    assert r.returncode != 0
    # ann's own key does not open ben's container.
    assert ssh_key(key_a, b.ports["ssh"], "true").returncode != 0
    # On the host, each home is private to its owner.
    assert oct(os.stat(a.home).st_mode & 0o777) == "0o700"
    assert os.stat(a.home).st_uid != os.stat(b.home).st_uid
