"""Picking the bridge subnet: pure, no host needed."""

from __future__ import annotations

from ipaddress import IPv4Interface, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labgpu.domain.network import (
    network_of,
    parse_bridge_address,
    parse_proc_net_route,
    pick_free_subnet,
)
from labgpu.errors import Exhausted

N = IPv4Network


def test_picks_the_first_24_of_the_default_search_when_nothing_is_used() -> None:
    assert pick_free_subnet([]) == IPv4Interface("10.99.0.1/24")


def test_skips_subnets_the_host_or_the_daemon_already_uses() -> None:
    used = [N("10.99.0.0/24"), N("10.99.1.0/24"), N("192.0.2.0/24")]
    assert pick_free_subnet(used) == IPv4Interface("10.99.2.1/24")


def test_a_wider_used_network_rules_out_every_24_inside_it() -> None:
    used = [N("10.213.0.0/23"), N("10.213.2.128/25")]
    assert pick_free_subnet(used, within=[N("10.213.0.0/16")]) == IPv4Interface("10.213.3.1/24")


def test_a_default_route_does_not_count_as_used() -> None:
    assert pick_free_subnet([N("0.0.0.0/0")], within=[N("10.213.0.0/16")]) == IPv4Interface("10.213.0.1/24")


def test_falls_back_to_the_next_block_when_one_is_full() -> None:
    used = [N("10.99.0.0/16"), N("10.0.0.0/24")]
    assert pick_free_subnet(used) == IPv4Interface("10.0.1.1/24")


def test_says_so_when_nothing_is_free() -> None:
    with pytest.raises(Exhausted, match="no free /24") as info:
        pick_free_subnet([N("10.213.0.0/16")], within=[N("10.213.0.0/16")])
    assert "network_subnet" in (info.value.hint or "")


@given(st.lists(st.tuples(st.integers(0, 255), st.integers(16, 28)), max_size=30))
def test_the_pick_never_overlaps_a_used_network(parts: list[tuple[int, int]]) -> None:
    used = [N(f"10.213.{third}.0/{prefix}", strict=False) for third, prefix in parts]
    try:
        picked = pick_free_subnet(used, within=[N("10.213.0.0/16")])
    except Exhausted:
        # Only when truly nothing is free.
        assert all(any(c.overlaps(n) for n in used) for c in N("10.213.0.0/16").subnets(new_prefix=24))
        return
    assert picked.network.prefixlen == 24
    assert picked.network.subnet_of(N("10.213.0.0/16"))
    assert not any(picked.network.overlaps(n) for n in used)
    assert picked.ip == picked.network.network_address + 1


def test_reads_proc_net_route() -> None:
    text = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "lxdbr0\t0000630A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
        "garbage line\n"
    )
    assert parse_proc_net_route(text) == [N("192.0.2.0/24"), N("10.99.0.0/24")]


def test_network_of_an_lxd_address() -> None:
    assert network_of("10.99.0.1/24") == N("10.99.0.0/24")
    assert network_of("none") is None
    assert network_of("auto") is None
    assert network_of("") is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.99.0.1", "no prefix"),
        ("10.99.0.0/24", "network's own address"),
        ("10.99.0.1/31", "leaves no room"),
        ("bridge", "not an IPv4 address"),
    ],
)
def test_a_bad_bridge_address_is_explained(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_bridge_address(value)


def test_a_good_bridge_address() -> None:
    assert parse_bridge_address(" 10.99.7.1/24 ") == IPv4Interface("10.99.7.1/24")
