"""members: public face."""

from __future__ import annotations

from labgpu.services.members._containers import connection_sheet, list_containers, list_hosts, uptime_seconds
from labgpu.services.members._homes import reachable_here
from labgpu.services.members._lifecycle import (
    count_snapshots,
    owned_instance,
    parse_set_request,
    remove_member,
    reset_member,
    set_member,
)
from labgpu.services.members._lookups import invoking_member
from labgpu.services.members._members import (
    ConnectionSheet,
    ProvisionError,
    add_keys,
    add_member,
    allowed_roots,
    checkpoint,
    container_spec,
    ensure_running,
    get_member,
    home_dir,
    host_gpus,
    list_keys,
    list_members,
    load_member,
    provision,
    remove_key,
    reset_password,
    set_power,
    validate_request,
    wait_member_ssh,
)
from labgpu.services.members._move_recovery import recover_moves
from labgpu.services.members._moves import move_member, open_move
from labgpu.services.members._shares import add_share, get_share, list_shares, remove_share
from labgpu.services.members._snapshots import (
    HOME_NOTE,
    SnapshotInfo,
    delete_snapshot,
    list_snapshots,
    restore_snapshot,
    take_snapshot,
)

__all__ = [
    "HOME_NOTE",
    "ConnectionSheet",
    "ProvisionError",
    "SnapshotInfo",
    "add_keys",
    "add_member",
    "add_share",
    "allowed_roots",
    "checkpoint",
    "connection_sheet",
    "container_spec",
    "count_snapshots",
    "delete_snapshot",
    "ensure_running",
    "get_member",
    "get_share",
    "home_dir",
    "host_gpus",
    "invoking_member",
    "list_containers",
    "list_hosts",
    "list_keys",
    "list_members",
    "list_shares",
    "list_snapshots",
    "load_member",
    "move_member",
    "open_move",
    "owned_instance",
    "parse_set_request",
    "provision",
    "reachable_here",
    "recover_moves",
    "remove_key",
    "remove_member",
    "remove_share",
    "reset_member",
    "reset_password",
    "restore_snapshot",
    "set_member",
    "set_power",
    "take_snapshot",
    "uptime_seconds",
    "validate_request",
    "wait_member_ssh",
]
