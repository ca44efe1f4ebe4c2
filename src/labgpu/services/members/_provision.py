"""Provisioning: bring the daemon to a member's desired state in steps that are each safe to repeat.

Each step checks what exists before acting; :func:`checkpoint` after each lets the crash tests cut the
process there.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from labgpu.domain.container import ContainerSpec, check_safe
from labgpu.errors import Conflict
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeBadRequest, RuntimeConflict, RuntimeError_, RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.hosts import public_address, services_for
from labgpu.services.members._credentials import write_while_booting
from labgpu.services.members._homes import ensure_home_on
from labgpu.services.members._keys import install_keys
from labgpu.services.members._login import generate_password, set_login
from labgpu.services.members._mirrors import apply_mirrors, mirrors_configured
from labgpu.services.members._placement import place_unplaced
from labgpu.services.members._records import (
    ConnectionSheet,
    allowed_roots,
    container_spec,
    home_dir,
    load_member,
)
from labgpu.services.members._ssh import wait_ssh_on
from labgpu.services.members._steps import StepReporter, silent
from labgpu.store.models import MemberState


def ensure_container(svc: Services, spec: ContainerSpec, roots: list[str]) -> bool:
    """Create the container in ONE request unless it exists. Returns True when created.

    Raises Conflict when an instance of that name exists and is not this member's."""
    runtime = svc.runtime
    try:
        inst = runtime.instances.get(spec.name)
    except RuntimeNotFound:
        inst = None
    if inst is not None:
        if inst.label("owner") != spec.owner:
            raise Conflict(f"an instance named {spec.name} exists and is not {spec.owner}'s")
        return False
    config, devices = spec.config(), spec.devices()
    check_safe(config, devices, allowed_roots=roots)
    runtime.instances.create(
        spec.name,
        image=spec.template,
        config=config,
        devices=devices,
        profiles=[spec.profile],
        description=f"labgpu container of {spec.owner}",
    )
    return True


def ensure_running(runtime: RuntimeClient, name: str) -> bool:
    """Start the container unless it runs. Returns True when it was started.

    The daemon may start it in the meantime (its own boot.autostart after a daemon restart, or a member's
    click): a start refused because it already runs is not an error."""
    if runtime.instances.state(name).status == "Running":
        return False
    try:
        runtime.instances.start(name)
    except (RuntimeBadRequest, RuntimeConflict, RuntimeError_):
        if runtime.instances.state(name).status == "Running":
            return False
        raise
    return True


def set_initial_password(svc: Services, container: str) -> str:
    """Set a random password for the container user, expired so that the first PASSWORD login must change
    it (key logins are not held up by it), with the login policy (members._login). Returns the password."""
    password = generate_password()
    set_login(
        svc.runtime,
        container,
        user=svc.settings.container_user,
        sudo_nopasswd=svc.settings.container_sudo_nopasswd,
        password=password,
        expire=True,
    )
    return password


PROVISION_STEPS = ("desired-state", "home", "container", "running", "ssh", "password", "keys", "done")


def checkpoint(step: str) -> None:
    """Fault injection for the crash tests: ``LABGPU_FAULT_KILL_AFTER=<step>`` makes the process
    SIGKILL itself right after that step, as a power cut or an OOM kill would.
    ``LABGPU_FAULT_PAUSE_AFTER=<step>`` with ``LABGPU_FAULT_PAUSE_FILE=<path>`` makes it create that
    file after the step and wait (up to 10 minutes) until it is gone, so that a test can restart the
    daemon in the middle of the operation."""
    if os.environ.get("LABGPU_FAULT_KILL_AFTER") == step:
        os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("LABGPU_FAULT_PAUSE_FILE")
    if pause and os.environ.get("LABGPU_FAULT_PAUSE_AFTER") == step:
        Path(pause).write_text(f"{os.getpid()} paused after {step}\n")
        deadline = time.monotonic() + 600
        while Path(pause).exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def provision(
    svc: Services,
    name: str,
    *,
    wait_ssh: bool = True,
    set_password: bool = True,
    report: StepReporter = silent,
) -> ConnectionSheet:
    """Bring the daemon to the member's desired state: home, container, running, sshd, credentials.

    The container is made on the member's host (a member without one, after `host rm --force`, is
    placed first). Each step checks before acting, so this is safe to run again after any crash.
    A container made here gets its SSH keys and login policy while it boots (members._credentials); one
    that existed gets them through the running container once sshd answers.
    ``report`` is told each step as it begins. Waits for sshd (up to SSH_READY_TIMEOUT). Raises
    ProvisionError, Conflict or runtime errors."""
    place_unplaced(svc, name)
    with svc.session() as session:
        member = load_member(session, name)
        host = member.host
        svc = services_for(svc, host)  # from here on: the daemon of the member's host
        spec = container_spec(svc, member)
        roots = allowed_roots(svc, session)
        keys = [k.public_key for k in member.ssh_keys]
        host_name = host.name if host else ""
        address = public_address(host, svc.settings) if host else svc.settings.listen_address
    assert member.uid is not None and member.container is not None
    report("home folder")
    ensure_home_on(svc, host, name, member.uid)
    checkpoint("home")
    report("creating the container")
    created = ensure_container(svc, spec, roots)
    checkpoint("container")
    report("starting the container")
    ensure_running(svc.runtime, spec.name)
    checkpoint("running")
    # A new container gets its keys and sudo rule while it boots, in place when sshd first answers. After a
    # crash the container exists: the keys then come through the running container, after sshd answers.
    password = generate_password() if set_password and not keys else None
    written = False
    if created:
        report("SSH keys and login policy, while it boots")
        written = write_while_booting(svc, spec.name, keys)
    if not created or mirrors_configured(svc):
        report("package mirrors")
        apply_mirrors(svc, spec.name, new_container=created)
    ssh = next(p for p in spec.ports if p.purpose == "ssh")
    if wait_ssh:
        report("waiting for sshd")
        wait_ssh_on(svc, host, ssh.listen_address, ssh.host_port, spec.name)
    checkpoint("ssh")
    # A member with a key logs in with it from the first second: no admin-known password, which, expired,
    # would hold up their key logins too (members._login).
    if password is not None or not written:
        report("initial password" if password else "login policy")
        set_login(
            svc.runtime,
            spec.name,
            user=svc.settings.container_user,
            sudo_nopasswd=svc.settings.container_sudo_nopasswd,
            password=password,
            expire=True,
        )
    checkpoint("password")
    if not written:
        report("SSH keys")
        install_keys(svc, spec.name, keys)
    checkpoint("keys")
    report("recording the member as running")
    with svc.session() as session:
        row = load_member(session, name)
        if row.state == MemberState.PROVISIONING:
            row.state = MemberState.RUNNING
    checkpoint("done")
    return ConnectionSheet(
        name=name,
        container=spec.name,
        host=host_name,
        address=address,
        user=svc.settings.container_user,
        state="running",
        ports={p.purpose: p.host_port for p in spec.ports},
        home=str(home_dir(svc, name)),
        container_home=spec.home_path,
        initial_password=password,
    )
