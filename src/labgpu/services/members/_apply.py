"""The container from the store: the config and devices a member's container should have, applied in ONE
request. ``set``, ``reset``, snapshots and shares re-use :func:`apply_spec`; moves re-use :func:`desired_patch`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labgpu.domain.container import check_safe
from labgpu.errors import Conflict
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.runtime.instances import Instance
from labgpu.services.context import Services
from labgpu.services.members._records import allowed_roots, container_spec, load_member, member_services

# How a change reached the container.
APPLIED_LIVE = "live"
APPLIED_NEXT_START = "at next start"
APPLIED_WHEN_CREATED = "when the container is created (labgpu reconcile)"

# Config keys labgpu may remove from a member's container when the spec leaves them out (a limit
# set back to the profile's default).
MANAGED_OPTIONAL_KEYS = ("limits.cpu", "limits.memory")
# Instance-level devices that belong to labgpu. "root" is one only when labgpu gave it a size.
MANAGED_DEVICE_PREFIXES = ("labgpu-", "share-")


# The container from the store ---------------------------------------------------------------------


def _managed_device(name: str, device: Mapping[str, str]) -> bool:
    if name.startswith(MANAGED_DEVICE_PREFIXES):
        return True
    return name == "root" and device.get("path") == "/" and "size" in device


def desired_patch(
    config: Mapping[str, str],
    devices: Mapping[str, Mapping[str, str]],
    current_config: Mapping[str, str],
    current_devices: Mapping[str, Mapping[str, str]],
) -> tuple[dict[str, str | None], dict[str, dict[str, str] | None]]:
    """The smallest update that brings an instance's config and devices to the spec's.

    A value of None removes the key or device. Only what labgpu manages is removed: optional
    limits, devices named ``labgpu-*`` and ``share-*``, and a root disk with a size."""
    config_patch: dict[str, str | None] = {k: v for k, v in config.items() if current_config.get(k) != v}
    for key in MANAGED_OPTIONAL_KEYS:
        if key not in config and key in current_config:
            config_patch[key] = None
    device_patch: dict[str, dict[str, str] | None] = {
        name: dict(dev) for name, dev in devices.items() if dict(current_devices.get(name) or {}) != dict(dev)
    }
    for name, dev in current_devices.items():
        if name not in devices and _managed_device(name, dev):
            device_patch[name] = None
    return config_patch, device_patch


def _merged(current: Mapping[str, Any], patch: Mapping[str, Any | None]) -> dict[str, Any]:
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def owned_instance(svc: Services, member: str, container: str | None) -> Instance | None:
    """The member's container, or None when it does not exist.

    Raises Conflict when an instance of that name exists but is not marked as this member's
    (``user.labgpu.owner``): labgpu never changes or deletes it."""
    if not container:
        return None
    try:
        inst = svc.runtime.instances.get(container)
    except RuntimeNotFound:
        return None
    owner = inst.label("owner")
    if owner != member:
        whose = f"marked as {owner}'s" if owner else "not marked as labgpu's (no user.labgpu.owner)"
        raise Conflict(
            f"the instance {container} is {whose}, not {member}'s: labgpu leaves it alone",
            hint="if it is the member's container, `labgpu reconcile` puts its owner key back",
        )
    return inst


def apply_spec(svc: Services, name: str, *, gpus_on_host: dict[int, str] | None = None) -> str:
    """Bring the member's existing container to the spec in the store, in ONE update request.

    Returns how it applied: APPLIED_LIVE (running), APPLIED_NEXT_START (stopped),
    APPLIED_WHEN_CREATED (no container yet), or "unchanged". Raises Conflict for an instance that
    is not the member's, BadInput when check_safe refuses the result, runtime errors when the
    daemon refuses the change (then nothing changed on the container). Waits for the update.
    ``gpus_on_host`` stands for the host's GPUs where its daemon lists none (tests and demos)."""
    svc = member_services(svc, name)  # the daemon of the member's host
    with svc.session() as session:
        member = load_member(session, name)
        spec = container_spec(svc, member, gpus_on_host=gpus_on_host)
        roots = allowed_roots(svc, session)
    inst = owned_instance(svc, name, spec.name)
    if inst is None:
        return APPLIED_WHEN_CREATED
    config_patch, device_patch = desired_patch(spec.config(), spec.devices(), inst.config, inst.devices)
    if not config_patch and not device_patch:
        return "unchanged"
    check_safe(
        _merged(inst.config, config_patch),
        _merged(inst.devices, device_patch),
        allowed_roots=roots,
        app_socket_dir=str(svc.settings.app_socket_dir()),  # web apps' proxies (app-*), added on demand
    )
    svc.runtime.instances.update(spec.name, config=config_patch, devices=device_patch)
    return APPLIED_LIVE if inst.status == "Running" else APPLIED_NEXT_START
