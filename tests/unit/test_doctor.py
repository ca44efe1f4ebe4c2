"""Doctor checks, evaluated against fake host trees and fake daemons: no GPU or daemon needed."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

from labgpu.gpu.nvml import NvmlProbe
from labgpu.runtime.client import RuntimeClient, ServerInfo
from labgpu.runtime.endpoint import Endpoint
from labgpu.runtime.errors import RuntimeUnavailable
from labgpu.services.hosts._doctor import (
    NO_GPU,
    REQUIRED_EXTENSIONS,
    Check,
    CheckStatus,
    DoctorReport,
    daemon_checks,
    database_check,
    gpu_checks,
    kernel_limit_checks,
    nvidia_pci_devices,
    parse_version,
    run_doctor,
    state_dir_check,
    subid_checks,
)
from labgpu.services.hosts._setup import HostPaths
from labgpu.settings import Settings
from tests.conftest import DEBIAN_SYSCTL_DEFAULTS, fake_sysctl

DRIVER_VERSION_TEXT = (
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n"
)


@dataclass
class FakeGpuHost:
    """A folder laid out like /dev, /proc and /sys of a host with NVIDIA GPUs."""

    root: Path

    @property
    def paths(self) -> HostPaths:
        return HostPaths(root=self.root)

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink()


def make_fake_gpu_host(
    root: Path, *, gpus: int = 2, driver: bool = True, uvm: bool = True, nodes: bool = True
) -> FakeGpuHost:
    for i in range(gpus):
        dev = root / f"sys/bus/pci/devices/0000:{0x3B + i:02x}:00.0"
        dev.mkdir(parents=True)
        (dev / "vendor").write_text("0x10de\n")
        (dev / "class").write_text("0x030200\n")
    other = root / "sys/bus/pci/devices/0000:00:1f.6"  # an Intel NIC: not a GPU
    other.mkdir(parents=True)
    (other / "vendor").write_text("0x8086\n")
    (other / "class").write_text("0x020000\n")
    (root / "dev").mkdir()
    if driver:
        (root / "proc/driver/nvidia/gpus").mkdir(parents=True)
        (root / "proc/driver/nvidia/version").write_text(DRIVER_VERSION_TEXT)
        for i in range(gpus):
            (root / f"proc/driver/nvidia/gpus/0000:{0x3B + i:02x}:00.0").mkdir()
    if nodes:
        for name in ["nvidiactl", *(f"nvidia{i}" for i in range(gpus))]:
            (root / "dev" / name).touch()
    if uvm:
        (root / "dev/nvidia-uvm").touch()
        (root / "dev/nvidia-uvm-tools").touch()
    return FakeGpuHost(root)


def nvml_ok(count: int = 2) -> NvmlProbe:
    return NvmlProbe(
        ok=True,
        detail=f"NVML works: driver 550.54.15, {count} GPUs",
        driver_version="550.54.15",
        gpu_count=count,
    )


def has_cli(name: str) -> str | None:
    return f"/usr/bin/{name}"


def no_cli(name: str) -> str | None:
    return None


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# GPU checks ---------------------------------------------------------------------


def test_a_healthy_fake_gpu_host_passes_every_gpu_check(tmp_path: Path) -> None:
    host = make_fake_gpu_host(tmp_path)
    checks = by_name(gpu_checks(host.paths, probe=nvml_ok, which=has_cli))
    assert {c.status for c in checks.values()} == {CheckStatus.OK}
    assert "550.54.15" in checks["nvidia-driver"].detail
    assert "/dev/nvidia1" in checks["nvidia-devices"].detail
    assert nvidia_pci_devices(host.paths) == ["0000:3b:00.0", "0000:3c:00.0"]


def test_missing_nvidia_uvm_fails_and_the_fix_is_nvidia_modprobe(tmp_path: Path) -> None:
    host = make_fake_gpu_host(tmp_path, uvm=False)
    check = by_name(gpu_checks(host.paths, probe=nvml_ok, which=has_cli))["nvidia-uvm"]
    assert check.status == CheckStatus.FAIL
    assert check.critical
    assert "/dev/nvidia-uvm" in check.detail
    assert "nvidia-modprobe -u -c=0" in check.fix
    assert "reboot" in check.fix


def test_missing_only_nvidia_uvm_tools_is_also_caught(tmp_path: Path) -> None:
    host = make_fake_gpu_host(tmp_path)
    host.remove("dev/nvidia-uvm-tools")
    check = by_name(gpu_checks(host.paths, probe=nvml_ok, which=has_cli))["nvidia-uvm"]
    assert check.status == CheckStatus.FAIL
    assert check.detail.startswith("missing /dev/nvidia-uvm-tools")


def test_missing_device_nodes(tmp_path: Path) -> None:
    host = make_fake_gpu_host(tmp_path)
    host.remove("dev/nvidia1")
    host.remove("dev/nvidiactl")
    check = by_name(gpu_checks(host.paths, probe=nvml_ok, which=has_cli))["nvidia-devices"]
    assert check.status == CheckStatus.FAIL
    assert "/dev/nvidiactl" in check.detail
    assert "1 of 2" in check.detail
    assert "nvidia-smi" in check.fix


def test_gpu_on_the_bus_without_a_driver(tmp_path: Path) -> None:
    host = make_fake_gpu_host(tmp_path, driver=False, nodes=False, uvm=False)
    failing = NvmlProbe(ok=False, detail="NVML library libnvidia-ml.so.1 not found")
    checks = by_name(gpu_checks(host.paths, probe=lambda: failing, which=no_cli))
    assert checks["nvidia-driver"].status == CheckStatus.FAIL
    assert "install the NVIDIA driver" in checks["nvidia-driver"].fix
    assert checks["nvml"].status == CheckStatus.FAIL
    assert "libnvidia-ml.so.1" in checks["nvml"].detail


def test_nvml_seeing_fewer_gpus_than_the_bus_fails(tmp_path: Path) -> None:
    host = make_fake_gpu_host(tmp_path, gpus=2)
    check = by_name(gpu_checks(host.paths, probe=lambda: nvml_ok(1), which=has_cli))["nvml"]
    assert check.status == CheckStatus.FAIL
    assert "xid" in check.fix.lower()


def test_missing_nvidia_container_cli_is_a_warning_only(tmp_path: Path) -> None:
    host = make_fake_gpu_host(tmp_path)
    check = by_name(gpu_checks(host.paths, probe=nvml_ok, which=no_cli))["nvidia-container-cli"]
    assert check.status == CheckStatus.WARN
    assert not check.critical
    assert "libnvidia-container-tools" in check.fix


def test_no_gpu_means_not_applicable_and_not_critical(tmp_path: Path) -> None:
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    called = []

    def probe() -> NvmlProbe:
        called.append(1)
        return nvml_ok()

    checks = gpu_checks(HostPaths(root=tmp_path), probe=probe, which=no_cli)
    assert [c.status for c in checks] == [CheckStatus.NA] * 5
    assert all(c.detail == NO_GPU and not c.critical and c.ok for c in checks)
    assert called == []  # NVML is not even tried
    assert DoctorReport(checks=checks).exit_code == 0


# Daemon -------------------------------------------------------------------------


def server(kind: str = "lxd", version: str = "5.0.2", extensions: frozenset[str] | None = None) -> ServerInfo:
    return ServerInfo(
        kind=kind,
        version=version,
        api_version="1.0",
        api_extensions=frozenset(REQUIRED_EXTENSIONS) if extensions is None else extensions,
        server_name="h",
        clustered=False,
        trusted=True,
    )


@pytest.mark.parametrize(
    ("kind", "version", "ok"),
    [("lxd", "5.0.2", True), ("lxd", "4.0.9", False), ("incus", "6.0.4", True), ("incus", "0.6", False)],
)
def test_minimum_versions(kind: str, version: str, ok: bool) -> None:
    check = by_name(daemon_checks(server(kind, version), "/sock"))["daemon-version"]
    assert (check.status == CheckStatus.OK) is ok
    if not ok:
        assert "upgrade" in check.fix


def test_missing_api_extensions_are_named() -> None:
    check = by_name(daemon_checks(server(extensions=frozenset({"instances"})), "/sock"))["api-extensions"]
    assert check.status == CheckStatus.FAIL
    assert "resources_gpu" in check.detail


def test_parse_version() -> None:
    assert parse_version("5.0.2") == (5, 0, 2)
    assert parse_version("6.0 LTS") == (6, 0)
    assert parse_version("git") == ()


def test_an_unreachable_daemon_fails_critically_and_skips_what_needs_it(tmp_path: Path) -> None:
    def connect() -> RuntimeClient:
        raise RuntimeUnavailable("cannot reach the LXD/Incus daemon at /nonexistent.sock", hint="start it")

    settings = Settings(state_dir=tmp_path / "state")
    report = run_doctor(
        settings, connect=connect, paths=HostPaths(root=tmp_path), probe=nvml_ok, which=no_cli
    )
    checks = by_name(report.checks)
    assert checks["daemon"].status == CheckStatus.FAIL
    assert checks["daemon"].fix == "start it"
    assert checks["profile"].status == CheckStatus.NA
    assert isinstance(report.runtime_error, RuntimeUnavailable)
    assert report.exit_code == 1


def test_a_daemon_that_does_not_answer_is_reported_with_where_it_was(tmp_path: Path) -> None:
    client = RuntimeClient(Endpoint.unix(tmp_path / "no.sock"), timeout=2)
    report = run_doctor(
        Settings(state_dir=tmp_path), connect=lambda: client, paths=HostPaths(root=tmp_path), which=no_cli
    )
    daemon = by_name(report.checks)["daemon"]
    assert str(tmp_path / "no.sock") in daemon.detail
    assert "start" in daemon.fix


# Host files ---------------------------------------------------------------------


def test_subid_ranges(tmp_path: Path) -> None:
    (tmp_path / "subuid").write_text("root:100000:10000001\n")
    (tmp_path / "subgid").write_text("root:100000:65536\n")
    paths = HostPaths(subuid_file=tmp_path / "subuid", subgid_file=tmp_path / "subgid")
    settings = Settings(state_dir=tmp_path, uid_base=200000, uid_count=10000)
    checks = by_name(subid_checks(settings, paths, "restart lxd"))
    assert checks["subuid"].status == CheckStatus.FAIL  # inside the containers' own range
    assert "e.g. uid_base = 90000" in checks["subuid"].fix
    (tmp_path / "subuid").write_text("root:100000:65536\nroot:200000:10000\n")
    checks = by_name(subid_checks(settings, paths, "restart lxd"))
    assert checks["subuid"].status == CheckStatus.OK
    assert checks["subgid"].status == CheckStatus.FAIL
    assert "root:200000:10000" in checks["subgid"].detail
    assert "labgpu host init" in checks["subgid"].fix
    assert "restart lxd" in checks["subgid"].fix


def test_state_dir(tmp_path: Path) -> None:
    assert state_dir_check(Settings(state_dir=tmp_path)).status == CheckStatus.OK
    assert state_dir_check(Settings(state_dir=tmp_path / "new")).status == CheckStatus.WARN
    (tmp_path / "file").touch()
    assert state_dir_check(Settings(state_dir=tmp_path / "file")).status == CheckStatus.FAIL


def test_database_missing_sqlite_is_a_warning_and_nothing_is_created(tmp_path: Path) -> None:
    check = database_check(Settings(state_dir=tmp_path / "state"))
    assert check.status == CheckStatus.WARN
    assert "labgpu db upgrade" in check.fix
    assert not (tmp_path / "state").exists()


def test_database_that_answers_but_is_not_migrated_then_is(tmp_path: Path) -> None:
    migrate = pytest.importorskip("labgpu.store.migrate")
    sqlite3.connect(tmp_path / "labgpu.db").close()
    settings = Settings(state_dir=tmp_path)
    check = database_check(settings)
    assert check.status == CheckStatus.WARN, check
    assert "schema revision none" in check.detail
    assert "labgpu db upgrade" in check.fix
    migrate.upgrade(settings)
    check = database_check(settings)
    assert check.status == CheckStatus.OK, check
    assert "answers" in check.detail


def test_json_shape() -> None:
    check = Check("nvml", CheckStatus.NA, NO_GPU, critical=False)
    assert check.to_dict() == {
        "name": "nvml",
        "ok": True,
        "status": "n-a",
        "detail": NO_GPU,
        "fix": "",
        "critical": False,
    }


# Kernel limits ------------------------------------------------------------------


def sysctls(root: Path, **changes: int) -> HostPaths:
    """A fake /proc/sys with Debian 12's defaults, ``changes`` given as fs__inotify__max_user_watches=N."""
    values = {**DEBIAN_SYSCTL_DEFAULTS, **{k.replace("__", "/"): v for k, v in changes.items()}}
    return HostPaths(root=fake_sysctl(root, values))


def test_debians_default_inotify_limit_fails_and_says_how_many_containers_can_run(tmp_path: Path) -> None:
    paths = sysctls(tmp_path)
    [check] = kernel_limit_checks(paths)
    assert check.status == CheckStatus.FAIL
    assert not check.critical  # a few containers still run: doctor's exit code stays 0
    assert "only about 16 containers" in check.detail
    assert "sysctl -w fs.inotify.max_user_instances=1048576" in check.fix
    assert "sysctl -w vm.max_map_count=262144" in check.fix
    assert "labgpu host init" in check.fix
    assert DoctorReport(checks=[check]).exit_code == 0


def test_raised_inotify_but_other_limits_low_is_a_warning_naming_them(tmp_path: Path) -> None:
    paths = sysctls(
        tmp_path,
        fs__inotify__max_user_instances=1024,
        fs__inotify__max_user_watches=1048576,
        vm__max_map_count=262144,
    )
    [check] = kernel_limit_checks(paths)
    assert check.status == CheckStatus.WARN
    assert "fs.inotify.max_queued_events=16384" in check.detail
    assert "max_user_watches" not in check.fix  # only what is low is to be changed


def test_production_limits_pass_and_no_proc_is_not_applicable(tmp_path: Path) -> None:
    paths = sysctls(
        tmp_path / "good",
        fs__inotify__max_user_instances=1048576,
        fs__inotify__max_user_watches=1048576,
        fs__inotify__max_queued_events=1048576,
        vm__max_map_count=262144,
    )
    assert [c.status for c in kernel_limit_checks(paths)] == [CheckStatus.OK]
    assert [c.status for c in kernel_limit_checks(HostPaths(root=tmp_path / "none"))] == [CheckStatus.NA]


def test_a_missing_debootstrap_is_a_warning_naming_the_command_and_the_package() -> None:
    from labgpu.services.hosts._doctor_checks import host_tool_checks

    (check,) = host_tool_checks(lambda tool: None if tool == "debootstrap" else f"/usr/bin/{tool}")
    assert check.name == "host-tools" and check.status == CheckStatus.WARN and not check.critical
    assert "debootstrap is missing (needed by labgpu template bootstrap" in check.detail
    assert check.fix == "apt-get install debootstrap"
    (check,) = host_tool_checks(lambda tool: f"/usr/sbin/{tool}")
    assert check.status == CheckStatus.OK
