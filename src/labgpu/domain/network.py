"""Picking a free IPv4 subnet for the container bridge, and reading what the host already uses.

Pure: callers gather the used networks (host routes, the daemon's networks) and pass them in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Interface, IPv4Network

from labgpu.errors import Exhausted

# Searched in this order. 10.99.0.0/16 first keeps labgpu's bridges together and away from the low
# 10.x ranges that campus networks and home routers tend to use; the RFC 1918 blocks are the fallback.
DEFAULT_SUBNET_SEARCH: tuple[IPv4Network, ...] = (
    IPv4Network("10.99.0.0/16"),
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)


def pick_free_subnet(
    used: Iterable[IPv4Network],
    *,
    within: Sequence[IPv4Network] = DEFAULT_SUBNET_SEARCH,
    prefix: int = 24,
) -> IPv4Interface:
    """The first ``/prefix`` in ``within`` that overlaps none of ``used``, as the bridge's address
    (its first host address, e.g. ``10.99.0.1/24``).

    Default routes (``0.0.0.0/0``) cover everything and say nothing about what is taken, so they are
    ignored. Raises Exhausted when every candidate overlaps.
    """
    taken = sorted((int(n.network_address), int(n.broadcast_address)) for n in used if n.prefixlen > 0)
    size = 1 << (32 - prefix)
    for block in within:
        if block.prefixlen > prefix:
            continue
        start = int(block.network_address)
        end = int(block.broadcast_address)
        while start + size - 1 <= end:
            last = start + size - 1
            clash = next((hi for lo, hi in taken if lo <= last and hi >= start), None)
            if clash is None:
                return IPv4Interface(f"{IPv4Network((start, prefix)).network_address + 1}/{prefix}")
            # Jump past the network we clashed with, keeping candidates aligned.
            start = max(start + size, ((clash + 1 + size - 1) // size) * size)
    searched = ", ".join(str(b) for b in within)
    raise Exhausted(
        f"no free /{prefix} subnet left in {searched}",
        hint="set network_subnet (e.g. 10.99.0.1/24) to a subnet you know is free",
    )


def parse_proc_net_route(text: str) -> list[IPv4Network]:
    """The destination networks of ``/proc/net/route`` (little-endian hex), default routes left out."""
    out: list[IPv4Network] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(int(fields[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(fields[7], 16).to_bytes(4, "little"))
            net = IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            out.append(net)
    return out


def network_of(address: str) -> IPv4Network | None:
    """The network of an LXD ``ipv4.address`` value ("10.99.0.1/24"); None for none/auto/garbage."""
    try:
        return IPv4Interface(address.strip()).network
    except ValueError:
        return None


def parse_bridge_address(value: str) -> IPv4Interface:
    """A bridge address given by a person (``network_subnet``): a host address with a prefix.

    Raises ValueError with a message saying what is wrong.
    """
    try:
        iface = IPv4Interface(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address/prefix such as 10.99.0.1/24") from None
    if "/" not in value:
        raise ValueError(f"{value!r} has no prefix length; write it like 10.99.0.1/24")
    if iface.network.prefixlen > 30:
        raise ValueError(f"{value!r}: the prefix /{iface.network.prefixlen} leaves no room for containers")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address):
        raise ValueError(
            f"{value!r} is the network's own address; give the bridge's address, e.g. "
            f"{iface.network.network_address + 1}/{iface.network.prefixlen}"
        )
    return iface
