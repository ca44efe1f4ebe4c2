"""members: lab members and their containers.

Adding one (``add_member``, then the idempotent ``provision``), listing and showing them (``list_members``,
``get_member``), power, reset and removal (homes are kept unless purged), limits and GPUs (``set_member``),
SSH keys, snapshots, members' own templates (saved from a snapshot, to reset to), shares of host folders, homes, moving a container to another host, and terminals in the
browser (``open_terminal``, the registry ``Terminals`` and the pump ``run_terminal``). The public face
of ``services/members``: cli/, web/ and the other features import only this module.
"""

from __future__ import annotations

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._apply import apply_spec, owned_instance
from labgpu.services.members._containers import (
    ContainerRow,
    HostRow,
    connection_sheet,
    list_containers,
    list_hosts,
    uptime_seconds,
)
from labgpu.services.members._desktop import VNC_PASSWORD_LENGTH, set_vnc_password
from labgpu.services.members._homes import reachable_here
from labgpu.services.members._keys import add_keys, list_keys, remove_key
from labgpu.services.members._lifecycle import (
    Removal,
    count_snapshots,
    finish_removal,
    remove_member,
    reset_member,
)
from labgpu.services.members._listing import get_member, list_members
from labgpu.services.members._lookups import invoking_member
from labgpu.services.members._mirrors import MirrorChange, apply_mirrors
from labgpu.services.members._move_recovery import recover_moves
from labgpu.services.members._moves import move_member, open_move
from labgpu.services.members._my_templates import (
    MyTemplate,
    MyTemplateRemoval,
    check_template_use,
    get_my_template,
    is_member_template,
    list_my_templates,
    remove_my_template,
    save_my_template,
    template_alias,
)
from labgpu.services.members._power import reset_password, set_container_password, set_power
from labgpu.services.members._provision import checkpoint, ensure_running, provision
from labgpu.services.members._records import (
    ConnectionSheet,
    MemberInfo,
    ProvisionError,
    allowed_roots,
    container_spec,
    home_dir,
    host_gpus,
    load_member,
)
from labgpu.services.members._set import Change, parse_set_request, set_member
from labgpu.services.members._shares import add_share, get_share, list_shares, remove_share
from labgpu.services.members._snapshots import (
    HOME_NOTE,
    SnapshotInfo,
    delete_snapshot,
    list_snapshots,
    restore_snapshot,
    take_snapshot,
)
from labgpu.services.members._ssh import wait_member_ssh
from labgpu.services.members._steps import StepReporter
from labgpu.services.members._terminal import (
    ContainerNotRunning,
    OpenedTerminal,
    connect_terminal,
    open_terminal,
)
from labgpu.services.members._terminal_bridge import (
    CLOSE_REASONS,
    BrowserSocket,
    LiveTerminal,
    Terminals,
    TooManyTerminals,
    run_terminal,
)

__all__ = [
    "CLOSE_REASONS",
    "HOME_NOTE",
    "VNC_PASSWORD_LENGTH",
    "BrowserSocket",
    "Change",
    "ConnectionSheet",
    "ContainerNotRunning",
    "ContainerRow",
    "HostRow",
    "LiveTerminal",
    "MemberInfo",
    "MirrorChange",
    "MyTemplate",
    "MyTemplateRemoval",
    "OpenedTerminal",
    "ProvisionError",
    "Removal",
    "SnapshotInfo",
    "StepReporter",
    "Terminals",
    "TooManyTerminals",
    "add_keys",
    "add_member",
    "add_share",
    "allowed_roots",
    "apply_mirrors",
    "apply_spec",
    "check_template_use",
    "checkpoint",
    "connect_terminal",
    "connection_sheet",
    "container_spec",
    "count_snapshots",
    "delete_snapshot",
    "ensure_running",
    "finish_removal",
    "get_member",
    "get_my_template",
    "get_share",
    "home_dir",
    "host_gpus",
    "invoking_member",
    "is_member_template",
    "list_containers",
    "list_hosts",
    "list_keys",
    "list_members",
    "list_my_templates",
    "list_shares",
    "list_snapshots",
    "load_member",
    "move_member",
    "open_move",
    "open_terminal",
    "owned_instance",
    "parse_set_request",
    "provision",
    "reachable_here",
    "recover_moves",
    "remove_key",
    "remove_member",
    "remove_my_template",
    "remove_share",
    "reset_member",
    "reset_password",
    "restore_snapshot",
    "run_terminal",
    "save_my_template",
    "set_container_password",
    "set_member",
    "set_power",
    "set_vnc_password",
    "take_snapshot",
    "template_alias",
    "uptime_seconds",
    "validate_request",
    "wait_member_ssh",
]
