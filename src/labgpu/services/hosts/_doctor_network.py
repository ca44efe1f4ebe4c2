"""doctor's look at the containers' network: does the profile give them the NIC, and can a container reach the
host's bridge address and the configured package mirrors (DNS and TCP)? Asked from inside a running labgpu
container (a read-only probe: a route lookup, a name lookup, TCP connects, nothing written); without one,
the host's own view of the mirrors is all that can be told."""

from __future__ import annotations

import socket

from labgpu.domain import mirrors
from labgpu.errors import LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.services.hosts._doctor_checks import Check, fail, na, ok, warn
from labgpu.services.hosts._profile import NIC_DEVICE
from labgpu.settings import Settings

# $1 the bridge address ("-": none), then (host, port) pairs. Prints one line per probe: route, gateway,
# dns HOST, tcp HOST PORT, each followed by ok or fail.
PROBE_SCRIPT = r"""
gw="$1"; shift
route=$(ip -4 route show default 2>/dev/null | head -n 1)
[ -n "$route" ] && echo "route ok $route" || echo "route fail"
probe() { timeout 4 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null; }
if [ "$gw" != "-" ]; then probe "$gw" 53 && echo "gateway ok" || echo "gateway fail"; fi
while [ $# -ge 2 ]; do
  getent hosts "$1" >/dev/null 2>&1 && echo "dns $1 ok" || echo "dns $1 fail"
  probe "$1" "$2" && echo "tcp $1 $2 ok" || echo "tcp $1 $2 fail"
  shift 2
done
"""


def profile_nic_check(runtime: RuntimeClient, settings: Settings) -> Check | None:
    """A bridge or macvlan set in the settings, but a profile without the NIC (a host set up with network_mode
    none): say how to move it. None when there is nothing to say."""
    if settings.network_mode == "none":
        return None
    profile = runtime.profiles.find(settings.profile_name)
    if profile is None or NIC_DEVICE in profile.devices:
        return None
    return warn(
        "container-network",
        f"profile {profile.name} gives containers no NIC, but network_mode is {settings.network_mode}: they "
        "cannot reach package mirrors",
        "run `labgpu host init --force` (adds the NIC to the profile; running containers get it at their next "
        'restart), or set network_mode = "none" to keep containers without a network',
    )


def _probe_container(runtime: RuntimeClient, profile: str) -> str | None:
    """A running member's container on labgpu's profile (it has the NIC the profile gives)."""
    for inst in runtime.instances.all(with_state=False):
        if inst.status == "Running" and inst.label("owner") and profile in inst.profiles:
            return inst.name
    return None


def container_network_checks(runtime: RuntimeClient, settings: Settings) -> list[Check]:
    """From inside a running labgpu container: a default route, the bridge address, and each mirror's name
    and port. From the host when no container runs."""
    want = mirrors.Mirrors.from_settings(settings.apt_mirror, settings.pip_index_url, settings.conda_mirror)
    if settings.network_mode == "none":
        return [na("container-network", "network_mode is none: containers have no network")]
    container = _probe_container(runtime, settings.profile_name)
    if container is None:
        nobody = na("container-network", "no running labgpu container to test the network from")
        return [nobody, *_host_mirror_checks(want)]
    gateway = "-"
    if settings.network_mode == "bridge":
        bridge = runtime.networks.find(settings.network_name)
        if bridge is not None:
            gateway = (bridge.config.get("ipv4.address") or "-").split("/")[0] or "-"
    args = [gateway]
    for _what, host, port in want.hosts:
        args += [host, str(port)]
    try:
        result = runtime.instances.exec(container, ["sh", "-c", PROBE_SCRIPT, "sh", *args])
    except LabgpuError as exc:
        return [
            warn(
                "container-network",
                f"could not probe from {container}: {exc.message}",
                "see the daemon's log",
            )
        ]
    lines = result.stdout.splitlines()
    checks: list[Check] = []
    net = settings.network_name
    if not any(line.startswith("route ok") for line in lines):
        checks.append(
            fail(
                "container-network",
                f"container {container} has no default route: its NIC got no address by DHCP",
                f"templates built before labgpu configured eth0 by DHCP have no network: rebuild the template "
                f"(`labgpu template bootstrap`); check the bridge (`lxc network show {net}`)",
                critical=False,
            )
        )
        return checks
    if gateway != "-" and "gateway fail" in lines:
        checks.append(
            fail(
                "container-network",
                f"container {container} cannot reach the bridge address {gateway}",
                f"a host firewall drops the bridge's traffic: allow {net} (LXD/Incus firewall guide)",
                critical=False,
            )
        )
    else:
        checks.append(
            ok(
                "container-network",
                f"container {container} has a default route" + (f" via {gateway}" if gateway != "-" else ""),
                critical=False,
            )
        )
    for what, host, port in want.hosts:
        if f"dns {host} fail" in lines:
            checks.append(
                fail(
                    f"mirror-{what}",
                    f"container {container} cannot resolve {host} ({what} mirror)",
                    "the bridge's DNS (dnsmasq) asks the host's resolver: check /etc/resolv.conf on the host, or "
                    "give the mirror by IP address",
                    critical=False,
                )
            )
        elif f"tcp {host} {port} fail" in lines:
            checks.append(
                fail(
                    f"mirror-{what}",
                    f"container {container} cannot connect to {host}:{port} ({what} mirror)",
                    f"turn IPv4 NAT on for the bridge (`lxc network set {net} ipv4.nat=true`) or open the "
                    "campus firewall to the mirror; a mirror on the host must listen on the bridge address",
                    critical=False,
                )
            )
        else:
            checks.append(
                ok(f"mirror-{what}", f"{host}:{port} answers from container {container}", critical=False)
            )
    return checks


def _host_mirror_checks(want: mirrors.Mirrors) -> list[Check]:
    checks = []
    for what, host, port in want.hosts:
        try:
            with socket.create_connection((host, port), timeout=4):
                pass
        except OSError as exc:
            checks.append(
                fail(
                    f"mirror-{what}",
                    f"{host}:{port} ({what} mirror) does not answer from this host: {exc}",
                    "check the mirror's address in the settings and the campus firewall",
                    critical=False,
                )
            )
        else:
            checks.append(ok(f"mirror-{what}", f"{host}:{port} answers from this host", critical=False))
    return checks
