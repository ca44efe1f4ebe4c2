"""Opening a terminal in a member's container: a login shell of the container's user, in its home, on a pty.

The shell is ``runuser --login`` run by the daemon's interactive exec (as root inside the container, then
the container user with its groups, its home and its login environment, like an SSH login and like the
login gateway's shell). The exec's two WebSockets are connected by the caller's event loop
(:mod:`labgpu.services.members._terminal_bridge`); this module decides whether a terminal may open, starts
the exec on the daemon of the member's host (unix socket or HTTPS) and writes the audit entry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from labgpu.errors import N_, Conflict
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.terminal import ExecStream, InteractiveExec, cancel_interactive, start_interactive
from labgpu.services.context import Services
from labgpu.services.hosts import runtime_for
from labgpu.services.members._records import load_member
from labgpu.store.models import MemberState

# What the browser's terminal (xterm.js) is, and a UTF-8 locale so that Chinese (any non-ASCII text) is
# typed, pasted and shown as it is. runuser --login keeps only TERM and what is whitelisted; the
# container's own /etc/default/locale or the member's ~/.profile may still set another LANG.
TERMINAL_ENV = {"TERM": "xterm-256color", "COLORTERM": "truecolor", "LANG": "C.UTF-8"}


def terminal_command(user: str) -> list[str]:
    """The login shell of ``user`` (the container_user setting, never input from a request)."""
    return ["runuser", "--login", "--whitelist-environment=COLORTERM,LANG", "--", user]


class ContainerNotRunning(Conflict):
    """A terminal needs the container to be running."""

    reason = "not-running"


@dataclass(frozen=True)
class OpenedTerminal:
    """A shell started for ``member`` and waiting for its WebSockets (``runtime`` connects them)."""

    member: str
    container: str
    host: str
    runtime: RuntimeClient
    started: InteractiveExec


def open_terminal(svc: Services, name: str, *, cols: int = 80, rows: int = 24) -> OpenedTerminal:
    """Start a login shell in member ``name``'s container, sized ``cols`` x ``rows``, for ``svc.actor``
    (the caller checked that the actor is the member or an admin). Audited as ``member.terminal``, once the
    daemon has started it: a refused open leaves no entry.

    Does not wait for the shell. Raises NotFound (no such member), Conflict (no container yet, being made
    or removed), ContainerNotRunning, and runtime errors."""
    with svc.session() as session:
        member = load_member(session, name)
        if member.container is None or member.state in (MemberState.PROVISIONING, MemberState.REMOVING):
            raise Conflict(
                N_("the container of %(name)s is not ready (%(state)s)"),
                values={"name": name, "state": str(member.state)},
            )
        container = member.container
        host = member.host.name if member.host is not None else "local"
        runtime = runtime_for(svc, member.host)
    status = runtime.instances.state(container).status
    if status != "Running":
        raise ContainerNotRunning(
            N_("the container %(container)s is not running; start it first"), values={"container": container}
        )
    started = start_interactive(
        runtime,
        container,
        terminal_command(svc.settings.container_user),
        environment=dict(TERMINAL_ENV),
        cols=cols,
        rows=rows,
    )
    try:
        with svc.session() as session:
            svc.audit(session, "member.terminal", name, container=container, host=host)
    except BaseException:
        cancel_interactive(runtime, started)
        raise
    return OpenedTerminal(member=name, container=container, host=host, runtime=runtime, started=started)


async def connect_terminal(opened: OpenedTerminal) -> ExecStream:
    """Connect the shell's two WebSockets (the daemon starts it then); the exec is cancelled when that fails.

    Raises RuntimeUnavailable (the daemon cannot be reached), RuntimeError_ (it refused)."""
    try:
        return await ExecStream.connect(opened.runtime, opened.started)
    except BaseException:
        await asyncio.to_thread(cancel_interactive, opened.runtime, opened.started)
        raise
