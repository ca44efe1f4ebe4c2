"""`labgpu boot`'s device-node step and the systemd units, on a fake /proc, /sys and /dev."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from labgpu.services.hosts._setup import HostPaths
from labgpu.services.ops._boot import char_majors, ensure_gpu_devices
from labgpu.system.systemd import install_units, render_units


def fake_gpu_host(root: Path, *, gpus: int, uvm_loaded: bool) -> HostPaths:
    for i in range(gpus):
        dev = root / f"sys/bus/pci/devices/0000:0{i + 1}:00.0"
        dev.mkdir(parents=True)
        (dev / "vendor").write_text("0x10de\n")
        (dev / "class").write_text("0x030200\n")
        (root / f"proc/driver/nvidia/gpus/0000:0{i + 1}:00.0").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.14\n"
    )
    uvm = "511 nvidia-uvm\n" if uvm_loaded else ""
    (root / "proc/devices").write_text(
        f"Character devices:\n  1 mem\n195 nvidia-frontend\n{uvm}\nBlock devices:\n  8 sd\n195 nvidia-bogus\n"
    )
    (root / "dev").mkdir()
    return HostPaths(root=root)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.nodes: list[tuple[str, int, int, int]] = []

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        return subprocess.CompletedProcess(args, 0, "", "")

    def mknod(self, path: Path, major: int, minor: int, mode: int) -> None:
        self.nodes.append((path.name, major, minor, mode))


def test_no_gpu_means_nothing_to_do(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    rec = Recorder()
    report = ensure_gpu_devices(HostPaths(root=tmp_path), run=rec.run, which=lambda _: "/x", mknod=rec.mknod)
    assert report.gpus == 0 and not report.actions and not report.missing and not rec.calls


def test_majors_come_from_the_character_section_only(tmp_path: Path) -> None:
    paths = fake_gpu_host(tmp_path, gpus=1, uvm_loaded=True)
    assert char_majors(paths) == {"mem": 1, "nvidia-frontend": 195, "nvidia-uvm": 511}


def test_nvidia_modprobe_is_used_when_installed(tmp_path: Path) -> None:
    paths = fake_gpu_host(tmp_path, gpus=2, uvm_loaded=False)
    rec = Recorder()
    tools = {"nvidia-modprobe": "/usr/bin/nvidia-modprobe", "modprobe": "/sbin/modprobe"}
    ensure_gpu_devices(paths, run=rec.run, which=tools.get, mknod=rec.mknod)
    assert rec.calls[:4] == [
        ["/usr/bin/nvidia-modprobe"],
        ["/usr/bin/nvidia-modprobe", "-c=0"],
        ["/usr/bin/nvidia-modprobe", "-c=1"],
        ["/usr/bin/nvidia-modprobe", "-u", "-c=0"],
    ]


def test_seed_recipe_without_nvidia_modprobe_real_nodes(tmp_path: Path) -> None:
    """The seeds' fix (modprobe nvidia-uvm; mknod -m 666 /dev/nvidia-uvm c MAJOR 0) with real device nodes."""
    paths = fake_gpu_host(tmp_path, gpus=2, uvm_loaded=True)
    rec = Recorder()
    report = ensure_gpu_devices(paths, run=rec.run, which={"modprobe": "/sbin/modprobe"}.get)
    assert rec.calls == []  # both modules loaded already: no modprobe
    made = {p.name: p.stat() for p in (tmp_path / "dev").iterdir()}
    assert set(made) == {"nvidiactl", "nvidia0", "nvidia1", "nvidia-uvm", "nvidia-uvm-tools"}
    for name, info in made.items():
        assert stat.S_ISCHR(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666, name
    assert (os.major(made["nvidia1"].st_rdev), os.minor(made["nvidia1"].st_rdev)) == (195, 1)
    assert (os.major(made["nvidiactl"].st_rdev), os.minor(made["nvidiactl"].st_rdev)) == (195, 255)
    assert (os.major(made["nvidia-uvm-tools"].st_rdev), os.minor(made["nvidia-uvm-tools"].st_rdev)) == (
        511,
        1,
    )
    assert not report.missing and len(report.present) == 5
    # Run again: nothing to do.
    again = ensure_gpu_devices(paths, run=rec.run, which={"modprobe": "/sbin/modprobe"}.get)
    assert again.actions == [] and not again.missing


def test_module_not_loadable_is_a_reported_problem(tmp_path: Path) -> None:
    paths = fake_gpu_host(tmp_path, gpus=1, uvm_loaded=False)
    rec = Recorder()
    report = ensure_gpu_devices(paths, run=rec.run, which={"modprobe": "/sbin/modprobe"}.get, mknod=rec.mknod)
    assert ["/sbin/modprobe", "nvidia-uvm"] in rec.calls
    assert {n[0] for n in rec.nodes} == {"nvidiactl", "nvidia0"}
    assert any("nvidia-uvm module is not loaded" in p for p in report.problems)
    assert "/dev/nvidia-uvm" in report.missing


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    paths = fake_gpu_host(tmp_path, gpus=1, uvm_loaded=True)
    rec = Recorder()
    report = ensure_gpu_devices(paths, dry_run=True, run=rec.run, which=lambda _: None, mknod=rec.mknod)
    assert not rec.calls and not rec.nodes and not list((tmp_path / "dev").iterdir())
    assert any("dry run" in a for a in report.actions)


def test_units_order_boot_after_the_daemon_and_before_serve(tmp_path: Path) -> None:
    units = render_units(["/opt/labgpu/bin/labgpu"], config=Path("/etc/labgpu/labgpu.toml"))
    boot = units["labgpu-boot.service"]
    assert "Type=oneshot" in boot and "RemainAfterExit=yes" in boot
    assert "lxd.service" in boot and "incus.service" in boot and "snap.lxd.daemon.service" in boot
    assert "Before=labgpu-serve.service labgpu-agent.service" in boot
    assert "ExecStart=/opt/labgpu/bin/labgpu --config /etc/labgpu/labgpu.toml boot" in boot
    assert (
        "ExecStart=/opt/labgpu/bin/labgpu --config /etc/labgpu/labgpu.toml serve"
        in units["labgpu-serve.service"]
    )
    assert "After=labgpu-boot.service" in units["labgpu-agent.service"]

    report = install_units(unit_dir=tmp_path, command=["/opt/labgpu/bin/labgpu"])
    assert sorted(report.written) == sorted(units)
    assert report.systemd is False and "systemd is not running" in report.notes[0]
    assert install_units(unit_dir=tmp_path, command=["/opt/labgpu/bin/labgpu"]).unchanged == report.written
    if shutil.which("systemd-analyze"):
        fake = tmp_path / "bin"
        fake.mkdir()
        (fake / "labgpu").write_text("#!/bin/sh\n")
        (fake / "labgpu").chmod(0o755)
        install_units(unit_dir=tmp_path / "u", command=[str(fake / "labgpu")])
        done = subprocess.run(
            ["systemd-analyze", "verify", *map(str, (tmp_path / "u").iterdir())],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("bad", ["/proc/1/root/nonexistent/x"])
def test_units_folder_that_cannot_be_written_is_one_clear_error(bad: str) -> None:
    from labgpu.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot write the units"):
        install_units(unit_dir=Path(bad), command=["/x"])
