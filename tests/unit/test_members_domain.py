"""Pure member rules: names, sizes, GPU choices, keys, uid and port allocation, the container spec."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labgpu.domain.container import ContainerSpec, PortSpec, ShareSpec, check_safe, missing_gpus
from labgpu.domain.members import (
    GpuRequest,
    allocate_ports,
    allocate_uid,
    format_size,
    parse_gpu_request,
    parse_public_key,
    parse_size,
    validate_member_name,
)
from labgpu.errors import BadInput, Exhausted

ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"


@pytest.mark.parametrize("name", ["alice", "bob2", "li-wei", "ab", "a" * 32])
def test_good_names(name: str) -> None:
    assert validate_member_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("Alice", "invalid"),
        ("1alice", "invalid"),
        ("a", "invalid"),
        ("alice-", "invalid"),
        ("a--b", "invalid"),
        ("al ice", "invalid"),
        ("al;ice", "invalid"),
        ("../etc", "invalid"),
        ("a" * 33, "too long"),
        ("root", "reserved"),
        ("ubuntu", "reserved"),
        ("", "required"),
    ],
)
def test_bad_names_say_why(name: str, why: str) -> None:
    with pytest.raises(BadInput, match=why):
        validate_member_name(name)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("16GiB", 16 * 1024**3),
        ("16G", 16 * 1024**3),
        ("512MiB", 512 * 1024**2),
        ("1.5TiB", int(1.5 * 1024**4)),
        ("100", 100),
    ],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["lots", "-1GiB", "0", "16 parsecs", ""])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(BadInput):
        parse_size(text, what="memory limit")


@given(st.integers(min_value=1, max_value=2**50))
def test_format_size_round_trips(value: int) -> None:
    assert parse_size(format_size(value)) == value


def test_gpu_requests() -> None:
    assert parse_gpu_request("all") == GpuRequest("all")
    assert parse_gpu_request(" None ") == GpuRequest("none")
    assert parse_gpu_request("2,0,2") == GpuRequest("indexes", (0, 2))
    assert str(parse_gpu_request("1,3")) == "1,3"
    for bad in ("", "one", "0;rm", "-1", "1,,x"):
        with pytest.raises(BadInput):
            parse_gpu_request(bad)
    assert missing_gpus(GpuRequest("indexes", (0, 5)), {0: "0000:01:00.0"}) == [5]


def test_public_keys() -> None:
    key = parse_public_key(ED25519)
    assert key.type == "ssh-ed25519" and key.comment == "alice@laptop"
    assert key.fingerprint.startswith("SHA256:") and len(key.fingerprint) == 50
    with pytest.raises(BadInput, match="PRIVATE"):
        parse_public_key("-----BEGIN OPENSSH PRIVATE KEY-----")
    with pytest.raises(BadInput):
        parse_public_key("ssh-ed25519 not-base64!!")
    mismatched = "ssh-rsa " + ED25519.split()[1]
    with pytest.raises(BadInput, match="do not match"):
        parse_public_key(mismatched)
    with pytest.raises(BadInput):
        parse_public_key(ED25519 + "\nssh-ed25519 AAAA")
    fake = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519" + b"x" * 32).decode()
    assert parse_public_key(f"ssh-ed25519 {fake}").comment == ""


@given(st.sets(st.integers(min_value=100, max_value=120)), st.integers(min_value=1, max_value=5))
def test_allocated_ports_are_free_distinct_and_in_range(used: set[int], count: int) -> None:
    try:
        ports = allocate_ports(used, start=100, end=120, count=count)
    except Exhausted:
        assert len(set(range(100, 121)) - used) < count
        return
    assert len(ports) == count == len(set(ports))
    assert all(100 <= p <= 120 and p not in used for p in ports)


@given(
    st.sets(st.integers(min_value=100, max_value=120)),
    st.sets(st.integers(min_value=100, max_value=120)),
    st.integers(min_value=1, max_value=5),
)
def test_ports_someone_else_listens_on_are_skipped(used: set[int], listened: set[int], count: int) -> None:
    try:
        ports = allocate_ports(used, start=100, end=120, count=count, available=lambda p: p not in listened)
    except Exhausted:
        assert len(set(range(100, 121)) - used - listened) < count
        return
    assert not set(ports) & (used | listened)
    assert ports == sorted(set(range(100, 121)) - used - listened)[:count]  # still the lowest free


def test_exhausted_ranges_say_how_to_fix() -> None:
    with pytest.raises(Exhausted, match="port_range"):
        allocate_ports({10}, start=10, end=10, count=1)
    with pytest.raises(Exhausted, match="uid_count"):
        allocate_uid({5, 6}, base=5, count=2)
    assert allocate_uid({5, 7}, base=5, count=5) == 6


def _spec(**kw: object) -> ContainerSpec:
    base: dict[str, object] = {
        "name": "alice",
        "owner": "alice",
        "template": "labgpu-minimal",
        "profile": "labgpu",
        "host_uid": 70001,
        "home_source": "/srv/labgpu/home/alice",
        "home_path": "/home/ubuntu/alice",
        "ports": (PortSpec("ssh", "0.0.0.0", 22000, 22),),
    }
    base.update(kw)
    return ContainerSpec(**base)  # type: ignore[arg-type]


def test_container_spec_has_everything_in_one_definition() -> None:
    spec = _spec(
        cpu=4,
        memory_bytes=8 * 1024**3,
        disk_bytes=50 * 1024**3,
        shares=(ShareSpec("data", "/data", "/mnt/data"),),
    )
    config, devices = spec.config(), spec.devices()
    assert config["user.labgpu.owner"] == "alice"
    assert config["raw.idmap"] == "uid 70001 1000\ngid 70001 1000"
    assert (config["limits.cpu"], config["limits.memory"]) == ("4", "8GiB")
    assert "security.privileged" not in config and "security.nesting" not in config
    assert devices["labgpu-home"] == {
        "type": "disk",
        "source": "/srv/labgpu/home/alice",
        "path": "/home/ubuntu/alice",
    }
    assert devices["share-data"]["readonly"] == "true"
    assert devices["labgpu-ssh"] == {
        "type": "proxy",
        "listen": "tcp:0.0.0.0:22000",
        "connect": "tcp:127.0.0.1:22",
        "bind": "host",
    }
    assert devices["root"]["size"] == "50GiB"
    check_safe(config, devices, allowed_roots=["/srv/labgpu/home", "/data"])


def test_gpu_devices_follow_the_request_and_the_host() -> None:
    gpus = {0: "0000:01:00.0", 1: "0000:02:00.0"}
    assert _spec(gpus=GpuRequest("all"), host_gpus=gpus).gpu_devices() == {
        "labgpu-gpu": {"type": "gpu", "gputype": "physical"}
    }
    assert _spec(gpus=GpuRequest("indexes", (1,)), host_gpus=gpus).gpu_devices() == {
        "labgpu-gpu1": {"type": "gpu", "gputype": "physical", "pci": "0000:02:00.0"}
    }
    assert _spec(gpus=GpuRequest("all"), host_gpus={}).gpu_devices() == {}


@pytest.mark.parametrize(
    ("config", "devices", "match"),
    [
        ({"security.privileged": "true"}, {}, "privileged"),
        ({"security.nesting": "1"}, {}, "nesting"),
        ({"raw.lxc": "lxc.apparmor.profile=unconfined"}, {}, "raw.lxc"),
        ({}, {"x": {"type": "disk", "source": "/etc", "path": "/mnt"}}, "outside"),
        ({}, {"x": {"type": "disk", "source": "/srv/labgpu/home/../../etc", "path": "/mnt"}}, "non-absolute"),
        ({}, {"x": {"type": "disk", "source": "/srv/labgpu/homeevil", "path": "/mnt"}}, "outside"),
        ({}, {"x": {"type": "unix-char", "path": "/dev/kmsg"}}, "hardware"),
        ({}, {"x": {"type": "disk", "source": "/", "path": "/"}}, "root filesystem"),
        (
            {},
            {"x": {"type": "proxy", "listen": "tcp:0.0.0.0:1", "connect": "unix:/var/lib/lxd/unix.socket"}},
            "socket",
        ),
    ],
)
def test_check_safe_refuses_what_weakens_isolation(
    config: dict[str, str], devices: dict[str, dict[str, str]], match: str
) -> None:
    with pytest.raises(BadInput, match=match):
        check_safe(config, devices, allowed_roots=["/srv/labgpu/home"])
