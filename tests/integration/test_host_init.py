"""`host init` and `doctor` against the real LXD and Incus daemons.

Every pool, network and profile has a unique name and is removed afterwards; bridges have NAT off
and a subnet in 10.213.0.0/16 picked by labgpu's own picker; subuid/subgid are temporary files.
"""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from labgpu.errors import BadInput
from labgpu.runtime.client import RuntimeClient
from labgpu.services.hosts._doctor import CheckStatus, nvidia_pci_devices, run_doctor
from labgpu.services.hosts._setup import HostPaths, StepStatus, init_host
from labgpu.settings import Settings
from tests.conftest import Cleanup, fake_sysctl, unique_name

# In the lane of the LXD tests (tests/lanes.py), on both daemons: two bridges made at once would both take the
# first free subnet.
pytestmark = [pytest.mark.integration, pytest.mark.lane("lxd")]

TEST_SUBNETS = (IPv4Network("10.213.0.0/16"),)
DEBIAN_SUBID = "_lxd:100000:65536\nroot:100000:65536\n"


@pytest.fixture
def subid_paths(tmp_path: Path) -> HostPaths:
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text(DEBIAN_SUBID)
    return HostPaths(
        subuid_file=tmp_path / "subuid",
        subgid_file=tmp_path / "subgid",
        sysctl_root=fake_sysctl(tmp_path / "sysctl"),  # not the machine's own kernel limits
    )


def make_settings(tmp_path: Path, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "storage_driver": "dir",
        "uid_base": 200000,
        "network_mode": "none",
    }
    values.update(kw)
    return Settings(**values)


def statuses(report: Any) -> dict[str, StepStatus]:
    return {s.step: s.status for s in report.steps}


def test_init_creates_everything_then_a_second_run_changes_nothing(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path, daemon_kind: str
) -> None:
    pool = cleanup.pool(unique_name("lgp"))
    net = cleanup.network(unique_name("lgn"))
    profile = cleanup.profile(unique_name("lgf"))
    settings = make_settings(
        tmp_path, storage_pool=pool, network_mode="bridge", network_name=net, profile_name=profile
    )

    report = init_host(runtime, settings, nat=False, subnet_search=TEST_SUBNETS, paths=subid_paths)

    assert statuses(report) == {
        "storage pool": StepStatus.CREATED,
        "network": StepStatus.CREATED,
        "profile": StepStatus.CREATED,
        "subuid": StepStatus.CREATED,
        "subgid": StepStatus.CREATED,
        "kernel limits": StepStatus.CHANGED,
    }
    sysctl = subid_paths.sysctl_root
    assert sysctl is not None
    assert (sysctl / "proc/sys/fs/inotify/max_user_instances").read_text() == "1048576\n"
    assert "fs.inotify.max_user_instances = 1048576" in (sysctl / "etc/sysctl.d/60-labgpu.conf").read_text()
    label = "LXD" if daemon_kind == "lxd" else "Incus"
    assert report.runtime.startswith(label + " ")
    assert report.runtime.endswith(f" at {runtime.endpoint.describe()}")
    daemon = "lxd" if daemon_kind == "lxd" else "incusd"
    assert any(f"restart the daemon ({daemon})" in n for n in report.notes)

    assert runtime.storage_pools.get(pool).driver == "dir"
    bridge = runtime.networks.get(net)
    assert bridge.type == "bridge"
    assert bridge.config["ipv4.nat"] == "false"
    assert bridge.config["ipv6.address"] == "none"
    assert IPv4Interface(bridge.config["ipv4.address"]).network.subnet_of(TEST_SUBNETS[0])
    prof = runtime.profiles.get(profile)
    assert prof.devices["root"] == {"type": "disk", "path": "/", "pool": pool}
    assert prof.devices["eth0"]["network"] == net
    assert prof.config["boot.autostart"] == "true"
    assert prof.config.get("security.privileged") != "true"
    assert prof.config.get("security.nesting") != "true"
    for name in ("subuid", "subgid"):
        text = (subid_paths.subuid if name == "subuid" else subid_paths.subgid).read_text()
        assert text == DEBIAN_SUBID + "root:200000:10000\n"

    again = init_host(runtime, settings, nat=False, subnet_search=TEST_SUBNETS, paths=subid_paths)
    assert again.nothing_to_change, again.to_dict()
    assert set(statuses(again).values()) == {StepStatus.UNCHANGED}
    assert again.notes == []
    assert subid_paths.subuid.read_text() == DEBIAN_SUBID + "root:200000:10000\n"


def test_a_changed_profile_is_reported_and_only_replaced_with_force(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    profile = cleanup.profile(unique_name("lgf"))
    settings = make_settings(tmp_path, storage_pool="default", profile_name=profile)
    init_host(runtime, settings, paths=subid_paths)

    # An admin turns autostart off, adds a CPU limit, and (wrongly) makes it privileged.
    runtime.profiles.replace(
        profile,
        config={"boot.autostart": "false", "limits.cpu": "2", "security.privileged": "true"},
        devices={"root": {"type": "disk", "path": "/", "pool": "default"}},
        description="edited",
    )
    report = init_host(runtime, settings, paths=subid_paths)
    step = next(s for s in report.steps if s.step == "profile")
    assert step.status == StepStatus.NEEDS_ATTENTION
    assert "--force" in step.detail
    assert "config boot.autostart: 'false' -> 'true'" in step.diff
    assert any(line.startswith("config security.privileged") for line in step.diff)
    assert runtime.profiles.get(profile).config["boot.autostart"] == "false"  # untouched

    dry = init_host(runtime, settings, force=True, dry_run=True, paths=subid_paths)
    assert statuses(dry)["profile"] == StepStatus.WOULD_CHANGE
    assert runtime.profiles.get(profile).config["boot.autostart"] == "false"

    forced = init_host(runtime, settings, force=True, paths=subid_paths)
    assert statuses(forced)["profile"] == StepStatus.CHANGED
    prof = runtime.profiles.get(profile)
    assert prof.config == {"boot.autostart": "true", "limits.cpu": "2"}  # the admin's limit is kept
    assert prof.description == "edited"

    assert init_host(runtime, settings, paths=subid_paths).nothing_to_change


def test_dry_run_changes_nothing(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    pool, net, profile = unique_name("lgp"), unique_name("lgn"), unique_name("lgf")
    cleanup.pool(pool)
    cleanup.network(net)
    cleanup.profile(profile)
    settings = make_settings(
        tmp_path, storage_pool=pool, network_mode="bridge", network_name=net, profile_name=profile
    )
    report = init_host(
        runtime, settings, dry_run=True, nat=False, subnet_search=TEST_SUBNETS, paths=subid_paths
    )
    assert set(statuses(report).values()) == {StepStatus.WOULD_CREATE, StepStatus.WOULD_CHANGE}
    assert statuses(report)["kernel limits"] == StepStatus.WOULD_CHANGE
    assert subid_paths.sysctl_root is not None
    assert not (subid_paths.sysctl_root / "etc/sysctl.d/60-labgpu.conf").exists()
    network_step = next(s for s in report.steps if s.step == "network")
    assert "10.213." in network_step.detail
    assert runtime.storage_pools.find(pool) is None
    assert runtime.networks.find(net) is None
    assert runtime.profiles.find(profile) is None
    assert subid_paths.subuid.read_text() == DEBIAN_SUBID


def test_auto_driver_prefers_a_copy_on_write_pool(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    pool = cleanup.pool(unique_name("lgp"))
    profile = cleanup.profile(unique_name("lgf"))
    settings = make_settings(tmp_path, storage_pool=pool, storage_driver="auto", profile_name=profile)
    report = init_host(runtime, settings, pool_size="1GiB", paths=subid_paths)
    step = next(s for s in report.steps if s.step == "storage pool")
    assert step.status == StepStatus.CREATED
    driver = runtime.storage_pools.get(pool).driver
    drivers = runtime.server().storage_drivers
    expected = next(d for d in ("btrfs", "zfs", "dir") if d in drivers)
    # Either the preferred driver, or dir with the reason it fell back.
    assert driver == expected or (driver == "dir" and "fell back" in step.detail)
    assert step.detail.startswith(driver)


def test_an_existing_pool_is_reused_whatever_its_driver(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    profile = cleanup.profile(unique_name("lgf"))
    settings = make_settings(tmp_path, storage_pool="default", storage_driver="btrfs", profile_name=profile)
    if "btrfs" not in runtime.server().storage_drivers:
        settings = make_settings(tmp_path, storage_pool="default", profile_name=profile)
    report = init_host(runtime, settings, paths=subid_paths)
    assert statuses(report)["storage pool"] == StepStatus.UNCHANGED


def test_macvlan_with_a_missing_parent_is_refused_before_any_change(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    pool = cleanup.pool(unique_name("lgp"))
    settings = make_settings(tmp_path, storage_pool=pool, network_mode="macvlan", network_parent="nosuchnic0")
    with pytest.raises(BadInput, match="nosuchnic0") as info:
        init_host(runtime, settings, paths=subid_paths)
    assert "interfaces here" in (info.value.hint or "")
    assert runtime.storage_pools.find(pool) is None
    assert subid_paths.subuid.read_text() == DEBIAN_SUBID


def test_macvlan_on_a_host_interface(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    parent = next(
        (
            p.name
            for p in sorted(Path("/sys/class/net").glob("*"))
            if (p / "device").exists() or p.name == "eth0"
        ),
        None,
    )
    if parent is None:
        pytest.skip("no physical network interface here")
    net = cleanup.network(unique_name("lgm"))
    profile = cleanup.profile(unique_name("lgf"))
    settings = make_settings(
        tmp_path,
        storage_pool="default",
        network_mode="macvlan",
        network_name=net,
        network_parent=parent,
        profile_name=profile,
    )
    report = init_host(runtime, settings, paths=subid_paths)
    assert statuses(report)["network"] == StepStatus.CREATED
    created = runtime.networks.get(net)
    assert created.type == "macvlan"
    assert created.config["parent"] == parent
    assert runtime.profiles.get(profile).devices["eth0"]["network"] == net
    assert init_host(runtime, settings, paths=subid_paths).nothing_to_change


def test_members_range_inside_the_containers_range_needs_attention(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    profile = cleanup.profile(unique_name("lgf"))
    for path in (subid_paths.subuid, subid_paths.subgid):
        path.write_text("root:100000:10000001\n")
    settings = make_settings(tmp_path, storage_pool="default", profile_name=profile, uid_base=200000)
    report = init_host(runtime, settings, paths=subid_paths)
    step = next(s for s in report.steps if s.step == "subuid")
    assert step.status == StepStatus.NEEDS_ATTENTION
    assert "uid_base = 90000" in step.detail
    assert subid_paths.subuid.read_text() == "root:100000:10000001\n"
    assert statuses(report)["profile"] == StepStatus.CREATED  # the other steps still ran


# Doctor --------------------------------------------------------------------------


def test_doctor_on_this_host(runtime: RuntimeClient, subid_paths: HostPaths, tmp_path: Path) -> None:
    subid_paths.subuid.write_text("root:100000:65536\nroot:200000:10000\n")
    subid_paths.subgid.write_text("root:100000:65536\nroot:200000:10000\n")
    settings = make_settings(tmp_path, storage_pool="default", profile_name="default")
    report = run_doctor(settings, connect=lambda: runtime, paths=subid_paths)
    checks = {c.name: c for c in report.checks}
    assert checks["daemon"].status == CheckStatus.OK
    assert runtime.endpoint.describe() in checks["daemon"].detail
    assert checks["daemon-version"].status == CheckStatus.OK
    assert checks["api-extensions"].status == CheckStatus.OK, checks["api-extensions"].detail
    assert checks["storage-pool"].status == CheckStatus.OK
    assert checks["network"].status == CheckStatus.NA
    assert checks["profile"].status == CheckStatus.OK
    assert checks["subuid"].status == CheckStatus.OK
    if not nvidia_pci_devices(HostPaths()) and not Path("/proc/driver/nvidia").exists():
        for name in ("nvidia-driver", "nvidia-devices", "nvidia-uvm", "nvml", "nvidia-container-cli"):
            assert checks[name].status == CheckStatus.NA
            assert not checks[name].critical
    assert report.exit_code == (1 if report.failed_critical else 0)
    assert report.exit_code == 0, [c for c in report.checks if c.status == CheckStatus.FAIL]


def test_doctor_after_host_init_and_when_things_are_missing(
    runtime: RuntimeClient, cleanup: Cleanup, subid_paths: HostPaths, tmp_path: Path
) -> None:
    pool = cleanup.pool(unique_name("lgp"))
    net = cleanup.network(unique_name("lgn"))
    profile = cleanup.profile(unique_name("lgf"))
    settings = make_settings(
        tmp_path, storage_pool=pool, network_mode="bridge", network_name=net, profile_name=profile
    )
    before = {c.name: c for c in run_doctor(settings, connect=lambda: runtime, paths=subid_paths).checks}
    for name in ("storage-pool", "network", "profile", "subuid", "subgid"):
        assert before[name].status == CheckStatus.FAIL, name
        assert "labgpu host init" in before[name].fix
    init_host(runtime, settings, nat=False, subnet_search=TEST_SUBNETS, paths=subid_paths)
    after = {c.name: c for c in run_doctor(settings, connect=lambda: runtime, paths=subid_paths).checks}
    for name in ("storage-pool", "network", "profile", "subuid", "subgid"):
        assert after[name].status == CheckStatus.OK, after[name]
