"""The offline image builder, for real: busybox into a temporary cache, debootstrap into the real cache,
and the SSH image booted on real LXD and Incus daemons."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from labgpu.runtime.client import RuntimeClient
from labgpu.system.base_image import (
    KEYGEN_UNIT,
    BuiltImage,
    build_image,
    busybox_recipe,
    debootstrap_recipe,
    resolve_cache_dir,
)
from tests.conftest import Cleanup, unique_name

pytestmark = pytest.mark.integration


def _require(what: str) -> None:
    if os.environ.get("LABGPU_REQUIRE_DAEMONS") == "1":
        pytest.fail(f"{what} (LABGPU_REQUIRE_DAEMONS=1: nothing may be skipped)")
    pytest.skip(what)


def read_meta(image: BuiltImage) -> tuple[dict[str, object], dict[str, str]]:
    with tarfile.open(image.meta) as tar:
        names = tar.getnames()
        assert sorted(names) == [
            "metadata.yaml",
            "templates",
            "templates/hostname.tpl",
            "templates/hosts.tpl",
        ]
        texts = {n: tar.extractfile(n).read().decode() for n in names if n != "templates"}  # type: ignore[union-attr]
    return yaml.safe_load(texts.pop("metadata.yaml")), texts


# busybox ------------------------------------------------------------------------------------------


def test_busybox_image_builds_in_a_second_then_comes_from_the_cache(tmp_path: Path) -> None:
    if not Path("/bin/busybox").exists():
        _require("/bin/busybox missing: apt-get install busybox-static")
    recipe = busybox_recipe()
    lines: list[str] = []
    started = time.monotonic()
    first = build_image(recipe, cache_dir=tmp_path, progress=lines.append)
    assert time.monotonic() - started < 5
    assert not first.cached
    assert lines  # progress was reported

    started = time.monotonic()
    again = build_image(recipe, cache_dir=tmp_path)
    assert time.monotonic() - started < 0.5
    assert again.cached
    assert (again.meta, again.rootfs, again.recipe_hash) == (first.meta, first.rootfs, first.recipe_hash)
    # Only the finished entry (and its lock) is left: no build folders.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [first.recipe_hash]

    metadata, templates = read_meta(first)
    assert metadata["architecture"] == recipe.architecture
    assert metadata["properties"]["labgpu.recipe"] == first.recipe_hash  # type: ignore[index]
    assert metadata["properties"]["os"] == "busybox"  # type: ignore[index]
    assert templates["templates/hostname.tpl"] == "{{ container.name }}\n"

    with tarfile.open(first.rootfs) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile()
    assert members["bin/busybox"].mode == 0o755
    assert members["sbin/init"].issym()
    assert members["sbin/init"].linkname == "../bin/busybox"
    assert members["bin/sh"].issym()
    assert {"etc/inittab", "etc/passwd", "etc/hostname", "proc", "sys", "dev", "tmp"} <= set(members)
    assert members["tmp"].mode == 0o1777
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}


# debootstrap --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssh_build() -> BuiltImage:
    """The SSH image, built once into the real cache (about a minute the first time)."""
    if os.geteuid() != 0:
        _require("building the debootstrap image needs root")
    if shutil.which("debootstrap", path=os.environ.get("PATH", "") + ":/usr/sbin") is None:
        _require("debootstrap missing: apt-get install debootstrap")
    return build_image(debootstrap_recipe(), cache_dir=resolve_cache_dir())


def test_ssh_image_second_build_is_instant(ssh_build: BuiltImage) -> None:
    started = time.monotonic()
    again = build_image(debootstrap_recipe(), cache_dir=resolve_cache_dir())
    assert time.monotonic() - started < 0.5
    assert again.cached and again.rootfs == ssh_build.rootfs


def test_ssh_image_rootfs_has_the_user_sshd_and_no_host_keys(ssh_build: BuiltImage) -> None:
    metadata, _ = read_meta(ssh_build)
    assert metadata["properties"] == {  # type: ignore[comparison-overlap]
        **metadata["properties"],  # type: ignore[dict-item]
        "os": "debian",
        "release": "bookworm",
        "labgpu.recipe": ssh_build.recipe_hash,
    }
    assert set(metadata["templates"]) == {"/etc/hostname", "/etc/hosts"}  # type: ignore[arg-type]

    files: dict[str, str] = {}
    wanted = {
        "etc/passwd",
        "etc/group",
        "etc/shadow",
        "etc/ssh/sshd_config.d/labgpu.conf",
        f"etc/systemd/system/{KEYGEN_UNIT}",
        "etc/machine-id",
        "etc/sudoers",
    }
    with tarfile.open(ssh_build.rootfs) as tar:
        members = {}
        for m in tar:
            name = m.name.removeprefix("./")
            members[name] = m
            if name in wanted and m.isfile():
                files[name] = tar.extractfile(m).read().decode()  # type: ignore[union-attr]

    assert "ubuntu:x:1000:1000::/home/ubuntu:/bin/bash" in files["etc/passwd"].splitlines()
    sudo = next(line for line in files["etc/group"].splitlines() if line.startswith("sudo:"))
    assert "ubuntu" in sudo.split(":")[3].split(",")
    assert any(line.startswith("ubuntu:!:") for line in files["etc/shadow"].splitlines())
    # Members of sudo get root with their own password, never without one.
    assert "%sudo\tALL=(ALL:ALL) ALL" in files["etc/sudoers"]
    assert "NOPASSWD" not in files["etc/sudoers"]
    home = members["home/ubuntu"]
    assert (home.uid, home.gid, home.isdir()) == (1000, 1000, True)
    assert members["home/ubuntu/.bashrc"].uid == 1000

    assert "PasswordAuthentication yes" in files["etc/ssh/sshd_config.d/labgpu.conf"]
    assert "KbdInteractiveAuthentication yes" in files["etc/ssh/sshd_config.d/labgpu.conf"]
    assert not [n for n in members if n.startswith("etc/ssh/ssh_host_")]
    unit = files[f"etc/systemd/system/{KEYGEN_UNIT}"]
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit
    assert "Before=ssh.service" in unit
    for wants in ("multi-user.target.wants", "ssh.service.wants"):
        link = members[f"etc/systemd/system/{wants}/{KEYGEN_UNIT}"]
        assert link.issym() and link.linkname == f"/etc/systemd/system/{KEYGEN_UNIT}"
    assert members["etc/systemd/system/multi-user.target.wants/ssh.service"].issym()

    assert files["etc/machine-id"] == ""
    assert not [n for n in members if n.startswith("var/lib/apt/lists/") and n.endswith("_Packages")]
    assert not [n for n in members if n.endswith(".deb")]
    assert not [n for n in members if n.startswith("dev/")]


# The SSH image booted on the real daemons ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh(port: int, password: str, command: str, *, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    argv = [
        "sshpass",
        "-e",
        "ssh",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "ConnectTimeout=5",
        "-p",
        str(port),
        "ubuntu@127.0.0.1",
        command,
    ]
    env = {**os.environ, "SSHPASS": password}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def test_ssh_image_boots_each_container_with_its_own_host_keys_and_password_login(
    runtime: RuntimeClient, cleanup: Cleanup, ssh_image: str
) -> None:
    if shutil.which("sshpass") is None:
        _require("sshpass missing: apt-get install sshpass")
    password = "Pw-" + unique_name("x")
    containers = []
    for _ in range(2):
        name = cleanup.instance(unique_name("imgtest"))
        port = free_port()
        runtime.instances.create(
            name,
            image=ssh_image,
            devices={
                "ssh": {"type": "proxy", "listen": f"tcp:127.0.0.1:{port}", "connect": "tcp:127.0.0.1:22"}
            },
        )
        runtime.instances.start(name)  # not create(start=True): LXD 5.0 lacks instance_create_start
        containers.append((name, port))

    keys = []
    for name, port in containers:
        runtime.instances.push_file(name, "/root/pw", f"ubuntu:{password}\n".encode(), mode=0o600)
        assert runtime.instances.exec(name, ["sh", "-c", "chpasswd < /root/pw && rm /root/pw"]).ok
        deadline = time.monotonic() + 60
        while True:  # sshd starts after the first-boot key generation
            result = ssh(port, password, "hostname; cat /etc/ssh/ssh_host_ed25519_key.pub")
            if result.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.returncode == 0, result.stderr
        hostname, key = result.stdout.splitlines()[:2]
        assert hostname == name  # the hostname template was rendered
        keys.append(key.split()[1])
    assert keys[0] != keys[1]

    name, port = containers[0]
    # sudo asks for the member's own password.
    assert ssh(port, password, "sudo -n true").returncode != 0
    sudo = ssh(port, password, f"echo {password} | sudo -S -p '' id -u")
    assert (sudo.returncode, sudo.stdout.strip()) == (0, "0")

    # An expired password (labgpu's initial one) must be changed before anything runs.
    assert runtime.instances.exec(name, ["chage", "-d", "0", "ubuntu"]).ok
    expired = ssh(port, password, "touch /tmp/ran")
    assert expired.returncode != 0
    assert runtime.instances.exec(name, ["test", "-e", "/tmp/ran"]).exit_code != 0
