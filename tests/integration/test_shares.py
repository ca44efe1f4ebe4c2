"""Shares end to end: read-only and read-write mounts seen through a real SSH login, shares for
every member through the profile, and bad input refused with nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Cleanup, LabgpuEnv, unique_name
from tests.integration.sshutil import make_key, ssh_key

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABGPU, *args], env=env.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600
    )


def host_folder(path: Path, files: dict[str, str], mode: int = 0o755) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    path.chmod(mode)
    return path


def test_read_only_share_cannot_be_written_and_read_write_one_can(
    labgpu_env: LabgpuEnv, tmp_path: Path
) -> None:
    env, runtime = labgpu_env, labgpu_env.runtime
    # World-writable on the host, so that only the read-only mount can stop a write.
    data = host_folder(tmp_path / "datasets", {"README": "imagenet subset\n"}, 0o777)
    scratch = host_folder(tmp_path / "scratch", {}, 0o1777)
    assert labgpu(env, "share", "add", "data", str(data), "/mnt/data").returncode == 0
    r = labgpu(env, "share", "add", "scratch", str(scratch), "/mnt/scratch", "--rw")
    assert r.returncode == 0, r.stderr

    key = make_key(tmp_path, "sue")
    r = labgpu(env, "member", "add", "sue", "--ssh-key", f"{key}.pub", "--share", "data", "--json")
    assert r.returncode == 0, r.stderr
    sheet = json.loads(r.stdout)
    port = sheet["ssh"]["port"]

    # Attached live to the running container.
    r = labgpu(env, "member", "set", "sue", "--share", "scratch", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["changes"] == [
        {
            "setting": "share scratch",
            "old": "-",
            "new": "/mnt/scratch (read-write)",
            "applied": "live",
            "note": "",
        }
    ]

    r = ssh_key(key, port, "cat /mnt/data/README; touch /mnt/data/x")
    assert r.returncode != 0
    assert r.stdout == "imagenet subset\n"
    assert "Read-only file system" in r.stderr
    assert not (data / "x").exists()
    r = ssh_key(key, port, "echo result > /mnt/scratch/out.txt")
    assert r.returncode == 0, r.stderr
    assert (scratch / "out.txt").read_text() == "result\n"

    shares = {s["name"]: s for s in json.loads(labgpu(env, "share", "list", "--json").stdout)}
    assert shares["data"]["members"] == ["sue"] and shares["data"]["readonly"] is True
    assert shares["scratch"]["readonly"] is False

    # Detaching from one member, and removing a share: the mounts go, the host data stays.
    assert labgpu(env, "member", "set", "sue", "--no-share", "data").returncode == 0
    assert "share-data" not in runtime.instances.get("sue").devices
    r = labgpu(env, "share", "rm", "scratch")
    assert r.returncode == 2 and "--yes" in r.stderr
    r = labgpu(env, "share", "rm", "scratch", "--yes")
    assert r.returncode == 0, r.stderr
    assert "share-scratch" not in runtime.instances.get("sue").devices
    assert ssh_key(key, port, "test -e /mnt/scratch/out.txt").returncode != 0
    assert (scratch / "out.txt").read_text() == "result\n"
    assert (data / "README").exists()
    assert [s["name"] for s in json.loads(labgpu(env, "share", "list", "--json").stdout)] == ["data"]


def test_cuda_toolkits_side_by_side_for_every_member(
    labgpu_env: LabgpuEnv, tmp_path: Path, cleanup: Cleanup
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    env, runtime = labgpu_env, labgpu_env.runtime
    # A profile of this test's own: --all changes the profile every container using it sees.
    base = runtime.profiles.get(env.overrides["profile_name"])
    profile = cleanup.profile(unique_name("labgpu-share"))
    runtime.profiles.create(
        profile, config=base.config, devices=base.devices, description="labgpu share test"
    )
    env.overrides["profile_name"] = profile

    cuda118 = host_folder(tmp_path / "cuda-11.8", {"version.txt": "CUDA Version 11.8\n"})
    cuda124 = host_folder(tmp_path / "cuda-12.4", {"version.txt": "CUDA Version 12.4\n"})
    for name, folder in (("cuda-11.8", cuda118), ("cuda-12.4", cuda124)):
        r = labgpu(env, "share", "add", name, str(folder), f"/usr/local/{name}", "--all")
        assert r.returncode == 0, r.stderr
    devices = runtime.profiles.get(profile).devices
    assert devices["share-cuda-11.8"] == {
        "type": "disk",
        "source": str(cuda118),
        "path": "/usr/local/cuda-11.8",
        "readonly": "true",
    }

    svc = env.services()
    add_member(svc, validate_request(svc, name="tom"), wait_ssh=False)
    read = runtime.instances.exec(
        "tom", ["cat", "/usr/local/cuda-11.8/version.txt", "/usr/local/cuda-12.4/version.txt"]
    )
    assert read.stdout == "CUDA Version 11.8\nCUDA Version 12.4\n"
    # Even the container's root cannot write to a read-only share.
    write = runtime.instances.exec("tom", ["touch", "/usr/local/cuda-12.4/x"])
    assert write.exit_code != 0 and "Read-only" in write.stderr

    r = labgpu(env, "member", "set", "tom", "--share", "cuda-11.8")
    assert r.returncode == 2 and "every member" in r.stderr
    r = labgpu(env, "member", "add", "tim", "--share", "cuda-11.8")
    assert r.returncode == 2 and "every member" in r.stderr
    assert not (Path(env.overrides["home_base"]) / "tim").exists()

    assert labgpu(env, "share", "rm", "cuda-11.8", "--yes").returncode == 0
    assert "share-cuda-11.8" not in runtime.profiles.get(profile).devices
    assert runtime.instances.exec("tom", ["test", "-e", "/usr/local/cuda-11.8/version.txt"]).exit_code != 0
    assert runtime.instances.exec("tom", ["test", "-e", "/usr/local/cuda-12.4/version.txt"]).exit_code == 0
    assert (cuda118 / "version.txt").exists()
    assert labgpu(env, "share", "rm", "cuda-12.4", "--yes").returncode == 0


def test_bad_shares_are_refused_with_one_line_and_nothing_left(labgpu_env: LabgpuEnv, tmp_path: Path) -> None:
    env = labgpu_env
    ok = host_folder(tmp_path / "ok", {})
    assert labgpu(env, "share", "add", "taken", str(ok), "/mnt/taken").returncode == 0
    state_dir, home_base = env.overrides["state_dir"], env.overrides["home_base"]
    Path(home_base).mkdir(parents=True, exist_ok=True)
    cases = [
        ("Bad Name", str(ok), "/mnt/x"),
        ("x", "/", "/mnt/x"),
        ("x", "/etc", "/mnt/x"),
        ("x", "/root", "/mnt/x"),
        ("x", "/var/lib/lxd", "/mnt/x"),
        ("x", "/var/lib/incus", "/mnt/x"),
        ("x", state_dir, "/mnt/x"),
        ("x", home_base, "/mnt/x"),
        ("x", str(tmp_path), "/mnt/x"),  # contains the homes
        ("x", "relative/dir", "/mnt/x"),
        ("x", str(tmp_path / "missing"), "/mnt/x"),
        ("x", str(ok), "/"),
        ("x", str(ok), "/proc/data"),
        ("x", str(ok), "/sys/data"),
        ("x", str(ok), "/dev/data"),
        ("x", str(ok), "mnt/x"),
        ("x", str(ok), "/mnt/taken"),  # another share's mount point
        ("taken", str(ok), "/mnt/y"),  # the name is taken
    ]
    for name, source, path in cases:
        r = labgpu(env, "share", "add", name, source, path)
        assert r.returncode == 2, (name, source, path, r.stdout, r.stderr)
        assert r.stderr.startswith("error:") and "Traceback" not in r.stderr, r.stderr
    assert [s["name"] for s in json.loads(labgpu(env, "share", "list", "--json").stdout)] == ["taken"]
    r = labgpu(env, "share", "rm", "nothing", "--yes")
    assert r.returncode == 2 and "no share named nothing" in r.stderr
