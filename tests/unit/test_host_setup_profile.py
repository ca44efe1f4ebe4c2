"""The labgpu profile: what it holds, how a changed one is reported and put right."""

from __future__ import annotations

import pytest

from labgpu.runtime.profiles import Profile
from labgpu.services.hosts._profile import labgpu_profile, merged_profile, profile_diff
from labgpu.settings import Settings


def settings(**kw: object) -> Settings:
    return Settings(state_dir="/tmp/labgpu-unit", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["none", "bridge", "macvlan"])
def test_the_profile_is_never_privileged_and_never_nested(mode: str) -> None:
    spec = labgpu_profile(settings(network_mode=mode, network_parent="eth0"), pool="p")
    assert spec.config.get("security.privileged", "false") != "true"
    assert spec.config.get("security.nesting", "false") != "true"
    assert "security.privileged" not in spec.config


def test_root_disk_autostart_and_a_nic_only_with_a_network() -> None:
    spec = labgpu_profile(settings(network_mode="bridge", network_name="br9"), pool="fast")
    assert spec.devices["root"] == {"type": "disk", "path": "/", "pool": "fast"}
    assert spec.devices["eth0"] == {"type": "nic", "name": "eth0", "network": "br9"}
    assert spec.config["boot.autostart"] == "true"
    assert "eth0" not in labgpu_profile(settings(network_mode="none"), pool="fast").devices


def test_a_bridge_nic_is_an_isolated_port_where_the_daemon_can_and_the_setting_wants() -> None:
    isolated = labgpu_profile(settings(), pool="p", port_isolation=True).devices["eth0"]
    assert isolated == {
        "type": "nic",
        "name": "eth0",
        "network": "labgpubr0",
        "security.port_isolation": "true",
    }
    assert "security.port_isolation" not in labgpu_profile(settings(), pool="p").devices["eth0"]
    shared = labgpu_profile(settings(network_isolation=False), pool="p", port_isolation=True)
    assert "security.port_isolation" not in shared.devices["eth0"]
    macvlan = labgpu_profile(
        settings(network_mode="macvlan", network_parent="eth0"), pool="p", port_isolation=True
    )
    assert "security.port_isolation" not in macvlan.devices["eth0"]


def existing(config: dict[str, str], devices: dict[str, dict[str, str]]) -> Profile:
    return Profile(name="labgpu", description="mine", config=config, devices=devices)


def test_same_profile_no_diff_and_admin_additions_are_not_differences() -> None:
    spec = labgpu_profile(settings(network_mode="none"), pool="default")
    have = existing(
        {"boot.autostart": "true", "limits.cpu": "4"},
        {"root": {"type": "disk", "path": "/", "pool": "default", "size": "50GiB"}, "data": {"type": "disk"}},
    )
    assert profile_diff(have, spec) == []


def test_diff_names_each_difference() -> None:
    spec = labgpu_profile(settings(network_mode="bridge", network_name="br9"), pool="default")
    have = existing(
        {"boot.autostart": "false", "security.privileged": "true"},
        {"root": {"type": "disk", "path": "/", "pool": "other"}},
    )
    diff = profile_diff(have, spec)
    assert "config boot.autostart: 'false' -> 'true'" in diff
    assert any(line.startswith("config security.privileged: 'true' -> unset") for line in diff)
    assert "device root pool: 'other' -> 'default'" in diff
    assert any(line.startswith("device eth0: missing") for line in diff)


def test_merge_puts_labgpu_keys_right_keeps_the_rest_and_drops_privileged() -> None:
    spec = labgpu_profile(settings(network_mode="none"), pool="default")
    have = existing(
        {"boot.autostart": "false", "security.privileged": "true", "limits.cpu": "4"},
        {"root": {"type": "disk", "path": "/", "pool": "other", "size": "50GiB"}},
    )
    merged = merged_profile(have, spec)
    assert merged.config == {"boot.autostart": "true", "limits.cpu": "4"}
    assert merged.devices["root"] == {"type": "disk", "path": "/", "pool": "default", "size": "50GiB"}
    assert merged.description == "mine"
    assert profile_diff(Profile("labgpu", "", merged.config, merged.devices), spec) == []
