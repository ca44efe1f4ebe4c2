"""The labgpu profile: what `host init` wants in it, how an existing one differs, and the two merged.

labgpu's containers take their root disk, autostart and NIC from this profile. It is never privileged:
security.privileged and security.nesting are never set, and a privileged profile is always a difference.
"""

from __future__ import annotations

from dataclasses import dataclass

from labgpu.runtime.profiles import Profile
from labgpu.settings import Settings

NIC_DEVICE = "eth0"
PROFILE_DESCRIPTION = "labgpu: containers of lab members (made by labgpu host init)"
# Never set by labgpu, and reported when found in its profile (DESIGN.md: containers are unprivileged).
FORBIDDEN_PROFILE_CONFIG = {"security.privileged": "true"}


@dataclass(frozen=True)
class ProfileSpec:
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    description: str


#: The daemon's API extension for ``security.port_isolation`` on bridged NICs (LXD 5.0 and Incus 6.0 have it).
PORT_ISOLATION_EXTENSION = "instance_nic_bridged_port_isolation"


def labgpu_profile(settings: Settings, *, pool: str, port_isolation: bool = False) -> ProfileSpec:
    """The profile labgpu's containers use: root disk on the pool, autostart, a NIC when the
    network mode gives one. Never privileged: security.privileged and security.nesting are not set.

    ``port_isolation`` (the daemon can isolate bridge ports): on a bridge, with setting network_isolation, the
    NIC is an isolated bridge port: containers reach the host and, through NAT, the world, but not each
    other's services."""
    devices: dict[str, dict[str, str]] = {"root": {"type": "disk", "path": "/", "pool": pool}}
    if settings.network_mode in ("bridge", "macvlan"):
        devices[NIC_DEVICE] = {"type": "nic", "name": NIC_DEVICE, "network": settings.network_name}
    if settings.network_mode == "bridge" and settings.network_isolation and port_isolation:
        devices[NIC_DEVICE]["security.port_isolation"] = "true"
    return ProfileSpec(config={"boot.autostart": "true"}, devices=devices, description=PROFILE_DESCRIPTION)


def profile_diff(existing: Profile, desired: ProfileSpec) -> list[str]:
    """How ``existing`` differs from ``desired`` in what labgpu manages, one line per difference.

    Keys and devices the admin added (limits, shares, a GPU) are not differences; a privileged
    profile always is.
    """
    lines: list[str] = []
    for key, want in desired.config.items():
        have = existing.config.get(key)
        if have != want:
            lines.append(f"config {key}: {_show(have)} -> {want!r}")
    for key, bad in FORBIDDEN_PROFILE_CONFIG.items():
        if existing.config.get(key, "").lower() == bad:
            lines.append(f"config {key}: {bad!r} -> unset (labgpu containers are never privileged)")
    for name, want_dev in desired.devices.items():
        have_dev = existing.devices.get(name)
        if have_dev is None:
            lines.append(f"device {name}: missing -> {_show_device(want_dev)}")
            continue
        for key, want in want_dev.items():
            if have_dev.get(key) != want:
                lines.append(f"device {name} {key}: {_show(have_dev.get(key))} -> {want!r}")
    return lines


def merged_profile(existing: Profile, desired: ProfileSpec) -> ProfileSpec:
    """``existing`` with labgpu's keys and devices put right and everything else kept."""
    config = {k: v for k, v in existing.config.items() if FORBIDDEN_PROFILE_CONFIG.get(k) != v.lower()}
    config.update(desired.config)
    devices = {name: dict(dev) for name, dev in existing.devices.items()}
    for name, want in desired.devices.items():
        if devices.get(name, {}).get("type") == want["type"]:
            devices[name].update(want)
        else:
            devices[name] = dict(want)
    return ProfileSpec(
        config=config, devices=devices, description=existing.description or desired.description
    )


def _show(value: str | None) -> str:
    return "unset" if value is None else repr(value)


def _show_device(dev: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in dev.items())
