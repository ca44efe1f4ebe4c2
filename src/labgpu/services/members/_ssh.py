"""Waiting for a member's sshd: where labgpu can knock, and how long it waits."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from labgpu.errors import LabgpuError
from labgpu.runtime.client import RuntimeClient
from labgpu.services.context import Services
from labgpu.services.hosts import public_address, services_for
from labgpu.services.members._records import ProvisionError, load_member
from labgpu.store.models import Host, PortPurpose

SSH_READY_TIMEOUT = 120.0
HALTED_CHECK_EVERY_S = 2.0  # how often wait_for_ssh asks the daemon whether the container still runs
# Between two knocks on the SSH port. A knock costs a connection to the proxy device and one from it inside
# the container; every 50 ms the wait ends at most 50 ms after sshd answers (0.3 s before: 0.15 s lost on
# average in each `member add`).
KNOCK_EVERY_S = 0.05


def probe_address(listen_address: str) -> str:
    return "127.0.0.1" if listen_address in ("0.0.0.0", "", "::") else listen_address  # noqa: S104 - a comparison, binds nothing


def ssh_probe_address(svc: Services, host: Host | None, listen_address: str) -> str | None:
    """Where labgpu can knock on a member's SSH port: this machine's loopback for the local daemon; the
    host's public address for another host listening on every address; None when the proxy listens
    on another host's loopback (nothing to reach from here)."""
    if host is None or host.url is None:
        return probe_address(listen_address)
    if listen_address in ("0.0.0.0", "", "::"):  # noqa: S104 - a comparison, binds nothing
        return public_address(host, svc.settings)
    if listen_address.startswith("127.") or listen_address in ("::1", "localhost"):
        return None
    return listen_address


def container_halted(runtime: RuntimeClient, name: str) -> Callable[[], str | None]:
    """A check for :func:`wait_for_ssh`: the container's status once it is no longer running, else None.

    A daemon that does not answer for a moment is not a verdict (None: keep waiting)."""

    def check() -> str | None:
        try:
            status = runtime.instances.state(name).status
        except LabgpuError:
            return None
        return None if status == "Running" else status or "gone"

    return check


def wait_for_ssh(
    address: str,
    port: int,
    *,
    timeout: float = SSH_READY_TIMEOUT,
    halted: Callable[[], str | None] | None = None,
    container: str = "",
) -> None:
    """Wait until an SSH server answers with its banner at address:port (through the proxy device).

    With ``halted`` (see :func:`container_halted`), a container that stops meanwhile (its init died at
    boot, it ran out of memory) fails the wait at once instead of after ``timeout``."""
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + HALTED_CHECK_EVERY_S
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=3) as sock:
                sock.settimeout(3)
                banner = sock.recv(64)
            if banner.startswith(b"SSH-"):
                return
            last = "connection closed before the SSH banner"
        except OSError as exc:
            last = exc.strerror or str(exc)
        if halted is not None and time.monotonic() >= next_check:
            next_check = time.monotonic() + HALTED_CHECK_EVERY_S
            status = halted()
            if status is not None:
                raise ProvisionError(
                    f"container {container} stopped while labgpu waited for its sshd (status: {status})",
                    hint=f"see why with `lxc info {container} --show-log` (or `incus info {container} "
                    "--show-log`); `labgpu doctor` checks the kernel limits that make containers die at boot",
                )
        time.sleep(KNOCK_EVERY_S)
    raise ProvisionError(f"sshd did not answer on {address}:{port} within {timeout:g}s ({last})")


def wait_ssh_on(svc: Services, host: Host | None, listen_address: str, port: int, container: str) -> None:
    """Wait until ``container``'s sshd answers through its SSH port map on ``host`` (``svc`` talks to that
    host's daemon), from wherever labgpu can knock; nothing to wait for when the port listens on another
    host's loopback. Fails at once when the container stops meanwhile. Raises ProvisionError."""
    probe = ssh_probe_address(svc, host, listen_address)
    if probe is None:
        return
    wait_for_ssh(
        probe,
        port,
        timeout=svc.settings.ssh_ready_timeout,
        halted=container_halted(svc.runtime, container),
        container=container,
    )


def wait_member_ssh(svc: Services, name: str) -> None:
    """:func:`wait_ssh_on` for a member, from the store. Raises NotFound, ProvisionError."""
    with svc.session() as session:
        member = load_member(session, name)
        host = member.host
        member_svc = services_for(svc, host)
        ssh = next((pm for pm in member.port_maps if pm.purpose == PortPurpose.SSH), None)
        container = member.container or name
    if ssh is not None:
        wait_ssh_on(member_svc, host, ssh.listen_address, ssh.host_port, container)
