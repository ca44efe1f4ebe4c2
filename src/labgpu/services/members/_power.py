"""Starting, stopping and restarting a member's container, one change at a time; new initial passwords."""

from __future__ import annotations

import logging
import threading

from labgpu.errors import N_, BadInput, Conflict, LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeError_
from labgpu.services.context import Services
from labgpu.services.hosts import runtime_for, services_for
from labgpu.services.members._keys import install_keys
from labgpu.services.members._login import set_login
from labgpu.services.members._provision import set_initial_password
from labgpu.services.members._records import load_member
from labgpu.store.models import MemberState

log = logging.getLogger(__name__)

# Changing -----------------------------------------------------------------------------------------


# One power change at a time per member in this process. The desired state is written, then the daemon
# acts; two changes sent together (a stop and a start from two tabs) must reach the daemon in the order
# they reached the store, or the store says running while the daemon stopped (a lost update). Another
# process (the CLI beside the portal) is not serialized with this one: the reconciler repairs that drift.
_power_locks: dict[str, threading.Lock] = {}
# Seconds the daemon waits for a container's init to shut down cleanly before labgpu forces it.
STOP_TIMEOUT = 30
_power_locks_guard = threading.Lock()


def _power_lock(name: str) -> threading.Lock:
    with _power_locks_guard:
        return _power_locks.setdefault(name, threading.Lock())


def set_power(svc: Services, name: str, action: str, *, force: bool = False) -> str:
    """start / stop / restart a member's container; records the desired state. Returns the new status.

    Waits for the daemon. Changes for the same member are made one at a time (in this process), so the
    desired state in the store is the one of the change the daemon saw last. Raises BadInput, NotFound,
    Conflict (the member is being provisioned or removed) and runtime errors."""
    if action not in ("start", "stop", "restart"):
        raise BadInput(f"unknown action {action!r}")
    with _power_lock(name):
        with svc.session() as session:
            member = load_member(session, name)
            if member.state in (MemberState.PROVISIONING, MemberState.REMOVING):
                raise Conflict(f"member {name} is {member.state}; run `labgpu reconcile` first")
            container = member.container or name
            member.state = MemberState.STOPPED if action == "stop" else MemberState.RUNNING
            svc.audit(session, f"member.{action}", name)
            runtime = runtime_for(svc, member.host)
            host_svc = services_for(svc, member.host)
            keys = [k.public_key for k in member.ssh_keys]
        status = runtime.instances.state(container).status
        if action == "start" and status != "Running":
            runtime.instances.start(container)
            _catch_up_keys(host_svc, container, keys)
        elif action == "stop" and status != "Stopped":
            _shut_down(runtime, container, "stop", force=force)
        elif action == "restart":
            if status == "Running":
                _shut_down(runtime, container, "restart", force=force)
            else:
                runtime.instances.start(container)
                _catch_up_keys(host_svc, container, keys)
        return runtime.instances.state(container).status


def _catch_up_keys(svc: Services, container: str, keys: list[str]) -> None:
    """Keys added or removed while the container was stopped reach it when it starts. A failure here does not
    undo the start: it is logged, and the next key change or start tries again."""
    try:
        install_keys(svc, container, keys)
    except LabgpuError as exc:
        log.warning("installing the SSH keys of %s after its start failed: %s", container, exc.message)


def _shut_down(runtime: RuntimeClient, container: str, action: str, *, force: bool) -> None:
    """Stop or restart: a clean shutdown (the daemon waits STOP_TIMEOUT for the container's init), then, if
    the container is still running, a forced one, as holding a machine's power button does: the member asked
    for it, and a container whose init hangs (or a host too busy to shut down in time) must not stay up
    with the portal answering 500. A refusal for another reason is raised as it is."""
    act = runtime.instances.stop if action == "stop" else runtime.instances.restart
    try:
        act(container, force=force, stop_timeout=STOP_TIMEOUT)
        return
    except RuntimeError_ as exc:
        if force or runtime.instances.state(container).status != "Running":
            raise
        log.warning("%s of %s: the clean shutdown failed (%s); forcing it", action, container, exc.message)
    act(container, force=True)


def reset_password(svc: Services, name: str) -> str:
    """Give the member a new random initial password (to change at the next login). Returns it.
    Audited once the password is set (a refusal, or a daemon that fails, leaves no row claiming it was)."""
    with svc.session() as session:
        member = load_member(session, name)
        container = member.container or name
        host_svc = services_for(svc, member.host)
        has_keys = bool(member.ssh_keys)
    if has_keys:
        # Expired, it would hold up the member's key logins (members._login).
        raise Conflict(
            N_(
                "%(name)s logs in with an SSH key: an admin-known password would stop those logins until it is "
                "changed. The member sets a password of their own on the portal (My container, Password)."
            ),
            values={"name": name},
        )
    if host_svc.runtime.instances.state(container).status != "Running":
        raise Conflict(f"{name}'s container is not running; start it first (labgpu member start {name})")
    password = set_initial_password(host_svc, container)
    with svc.session() as session:
        svc.audit(session, "member.passwd", name)
    return password


def set_container_password(svc: Services, name: str, password: str) -> None:
    """Set the container user's password to one the member chose (not expired: RDP, VNC and password SSH
    take it as it is). The caller checks its strength. Raises NotFound, Conflict when the container is not
    running, ProvisionError. Audited without the password."""
    with svc.session() as session:
        member = load_member(session, name)
        container = member.container or name
        host_svc = services_for(svc, member.host)
    if host_svc.runtime.instances.state(container).status != "Running":
        raise Conflict(N_("%(name)s's container is not running; start it first"), values={"name": name})
    set_login(
        host_svc.runtime,
        container,
        user=svc.settings.container_user,
        sudo_nopasswd=svc.settings.container_sudo_nopasswd,
        password=password,
        expire=False,
    )
    with svc.session() as session:
        svc.audit(session, "member.container_password", name)
