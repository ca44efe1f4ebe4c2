"""hosts: the machines labgpu runs containers on.

Setting a host up (``init_host``: pool, profile, subuid ranges, kernel limits), checking it (``run_doctor``),
adding and removing other hosts over HTTPS (``add_host``, ``remove_host``), asking them all at once
(``ask_all``), choosing one for a new container (``place``), reaching each host's daemon
(``runtime_for``, ``services_for``) and the login gateway on the host (``enable_gateway``, ``sync_gateway``,
...). The public face of ``services/hosts``: cli/, web/ and the other features import only this module.
"""

from __future__ import annotations

from labgpu.services.hosts._clients import is_local, runtime_for, services_for
from labgpu.services.hosts._doctor import nvidia_pci_devices, run_doctor
from labgpu.services.hosts._doctor_checks import CheckStatus

# The login gateway's use cases, named as such here (in _gateway they are the module's own verbs).
from labgpu.services.hosts._gateway import add_user as add_gateway_user
from labgpu.services.hosts._gateway import disable as disable_gateway
from labgpu.services.hosts._gateway import enable as enable_gateway
from labgpu.services.hosts._gateway import on_member_changed
from labgpu.services.hosts._gateway import remove_user as remove_gateway_user
from labgpu.services.hosts._gateway import status as gateway_status
from labgpu.services.hosts._gateway import sync as sync_gateway
from labgpu.services.hosts._gateway_map import refresh_map
from labgpu.services.hosts._gateway_paths import GatewayReport
from labgpu.services.hosts._gateway_paths import is_enabled as gateway_enabled
from labgpu.services.hosts._inventory import (
    ask_all,
    host_facts,
    known_hosts,
    list_containers,
    list_instances,
    on_member,
    parse_gpus,
)
from labgpu.services.hosts._placement import place
from labgpu.services.hosts._records import local_host, public_address, recorded_local_host
from labgpu.services.hosts._remote import (
    add_host,
    remove_host,
    set_agent_url,
    set_drained,
    set_public_address,
    validate_host_name,
)
from labgpu.services.hosts._setup import HostPaths, StepStatus, init_host, runtime_label
from labgpu.system.systemd import install_units

__all__ = [
    "CheckStatus",
    "GatewayReport",
    "HostPaths",
    "StepStatus",
    "add_gateway_user",
    "add_host",
    "ask_all",
    "disable_gateway",
    "enable_gateway",
    "gateway_enabled",
    "gateway_status",
    "host_facts",
    "init_host",
    "install_units",
    "is_local",
    "known_hosts",
    "list_containers",
    "list_instances",
    "local_host",
    "nvidia_pci_devices",
    "on_member",
    "on_member_changed",
    "parse_gpus",
    "place",
    "public_address",
    "recorded_local_host",
    "refresh_map",
    "remove_gateway_user",
    "remove_host",
    "run_doctor",
    "runtime_for",
    "runtime_label",
    "services_for",
    "set_agent_url",
    "set_drained",
    "set_public_address",
    "sync_gateway",
    "validate_host_name",
]
