"""Web apps in a member's container: which the template has, whether they run, starting and stopping them, and
the socket through which the portal reaches them.

An app listens on the container's loopback only. The portal reaches it through a proxy device whose host side
is a unix socket in ``apps_socket_dir`` (mode 0700 folder, the socket 0600 and owned by labgpu's own user):
no host TCP port is opened, and nobody but labgpu (and root) can connect. The device is added when the app is
first opened (``app-NAME``; the reconciler leaves it alone) and checked by ``check_safe`` like every change.
An app runs as a transient systemd unit (``systemd-run``) as the container's user, with the base URL it needs
and no token of its own: the portal authenticates every request.

A container on another host (a standalone daemon over HTTPS, a member of a cluster) gets no device: its socket
would lie on that machine. The portal relays instead (``_relay``): a socket of its own per app, each
connection an exec of a small python3 forwarder in the container through the daemon's API. Such a container
needs python3 (``start_app`` checks).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from labgpu.domain import apps as rules
from labgpu.domain.container import check_safe
from labgpu.errors import N_, BadInput, Conflict, LabgpuError, NotFound
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeBadRequest, RuntimeNotFound
from labgpu.runtime.relay import FORWARDER_USER
from labgpu.services import hosts, members
from labgpu.services.apps._relay import Relay, relay_socket_name
from labgpu.services.clients import parse_host_url
from labgpu.services.context import Services

log = logging.getLogger(__name__)

SOCKET_PATH_MAX = 107
START_TIMEOUT = 60.0
_start_locks: dict[tuple[str, str], threading.Lock] = {}
_start_guard = threading.Lock()


class AppsUnavailable(LabgpuError):
    """Web apps cannot be reached for this container (apps switched off, no python3 for the relay)."""

    status = 409
    reason = "apps-unavailable"


@dataclass(frozen=True)
class MemberApps:
    """A member's container and the apps its template has."""

    member: str
    container: str | None
    status: str  # Running, Stopped, missing, unreachable, none
    apps: tuple[rules.AppDef, ...]
    local: bool  # the container's daemon is on this machine (its sockets are reachable here); else relayed

    def get(self, name: str) -> rules.AppDef:
        for app in self.apps:
            if app.name == name:
                return app
        raise NotFound(N_("this container has no app named %(app)s"), values={"app": name[:40]})


@dataclass(frozen=True)
class AppTarget:
    """Where the proxy sends an app's requests: ``socket``, the proxy device's (a container on this host) or,
    with ``relay``, the portal's own relay socket (a container on another host: listen on it first, with
    ``AppRelays.ensure``)."""

    member: str
    app: rules.AppDef
    socket: Path
    relay: Relay | None = None

    @property
    def base_url(self) -> str:
        return rules.base_url(self.member, self.app.name)


def _lock(member: str, app: str) -> threading.Lock:
    with _start_guard:
        return _start_locks.setdefault((member, app), threading.Lock())


def _runtime(svc: Services, name: str) -> tuple[str | None, RuntimeClient, bool]:
    with svc.session() as session:
        member = members.load_member(session, name)
        container = member.container
        runtime = hosts.runtime_for(svc, member.host)
        # A daemon on this machine, and not a cluster member reached through it (whose sockets are elsewhere).
        local = hosts.is_local(member.host) and (
            member.host is None or member.host.url is None or parse_host_url(member.host.url).target is None
        )
    return container, runtime, local


def _host_name(svc: Services, name: str) -> str:
    with svc.session() as session:
        member = members.load_member(session, name)
        return member.host.name if member.host is not None else "local"


def member_apps(svc: Services, name: str) -> MemberApps:
    """The apps of member ``name``'s container (from its image's ``labgpu.apps`` property, which the daemon
    copies into the container's ``image.labgpu.apps`` key: trusted, unlike anything inside the container).
    One request to the daemon. Raises NotFound for an unknown member."""
    container, runtime, local = _runtime(svc, name)
    if not container:
        return MemberApps(name, None, "none", (), local)
    try:
        inst = runtime.instances.get(container)
    except RuntimeNotFound:
        return MemberApps(name, container, "missing", (), local)
    except LabgpuError:
        return MemberApps(name, container, "unreachable", (), local)
    if inst.label("owner") != name:
        return MemberApps(name, container, "missing", (), local)
    apps = tuple(rules.decode_apps(inst.config.get(rules.APPS_CONFIG_KEY)))
    return MemberApps(name, container, inst.status, apps, local)


def app_states(svc: Services, name: str) -> dict[str, str]:
    """Each app's state: running, starting, stopped (or failed), from ONE exec of systemctl in the
    container; every app is "stopped" while the container is not running."""
    view = member_apps(svc, name)
    if not view.apps:
        return {}
    if view.status != "Running" or view.container is None:
        return {a.name: "stopped" for a in view.apps}
    _, runtime, _ = _runtime(svc, name)
    units = [a.unit for a in view.apps]
    try:
        result = runtime.instances.exec(view.container, ["systemctl", "is-active", *units], timeout=15)
    except LabgpuError as exc:
        log.warning("cannot read the app states of %s: %s", name, exc.message)
        return {a.name: "unknown" for a in view.apps}
    lines = result.stdout.split()
    names = {"active": "running", "activating": "starting", "reloading": "running", "failed": "failed"}
    return {
        app.name: names.get(lines[i] if i < len(lines) else "", "stopped") for i, app in enumerate(view.apps)
    }


def socket_path(svc: Services, member: str, app: str) -> Path:
    """The host-side socket of ``member``'s ``app`` (a short hashed name: a socket path has at most 107 bytes).
    Raises AppsUnavailable when the folder's path is too long."""
    digest = hashlib.sha256(f"{member}\0{app}".encode()).hexdigest()[:20]
    path = svc.settings.app_socket_dir() / f"{digest}.sock"
    if len(str(path).encode()) > SOCKET_PATH_MAX:
        raise AppsUnavailable(
            N_("the app socket folder's path is too long for a unix socket: %(path)s"),
            values={"path": str(svc.settings.app_socket_dir())},
            hint="set apps_socket_dir to a short path on persistent storage, e.g. /var/lib/labgpu-apps",
        )
    return path


def _socket_dir(svc: Services) -> Path:
    folder = svc.settings.app_socket_dir()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def app_target(svc: Services, member: str, app: str) -> AppTarget:
    """Where ``member``'s ``app`` is reached, for the proxy (one daemon request; the app may not run).
    Raises NotFound for an unknown member or app."""
    if not rules.APP_NAME_RE.match(app) or svc.settings.apps_port == 0:
        raise NotFound(N_("this container has no app named %(app)s"), values={"app": app[:40]})
    view = member_apps(svc, member)
    spec = view.get(app)
    if view.local or view.container is None:
        return AppTarget(member, spec, socket_path(svc, member, app))
    return _relay_target(svc, member, view.container, spec)


def _relay_target(svc: Services, member: str, container: str, app: rules.AppDef) -> AppTarget:
    _, runtime, _ = _runtime(svc, member)
    relay = Relay(runtime=runtime, container=container, port=app.port, where=_host_name(svc, member))
    path = svc.settings.app_socket_dir() / relay_socket_name(member, app.name)
    if len(str(path).encode()) > SOCKET_PATH_MAX:
        socket_path(svc, member, app.name)  # raises the same clear error
    return AppTarget(member, app, path, relay)


def start_app(svc: Services, member: str, app: str) -> AppTarget:
    """Make sure ``member``'s ``app`` runs and the portal can reach it: the proxy device (added if missing,
    through check_safe), then the app's unit (started if not active, as the container's user, with its base
    URL). Audited as ``app.open``. Waits for the start request, not for the app to answer.

    A container on another host gets no device: the portal relays through its daemon (see the module); its
    python3 is checked instead. Raises NotFound (no such app), Conflict (the container is not running),
    AppsUnavailable (apps switched off, no python3 in a container on another host), runtime errors."""
    if svc.settings.apps_port == 0:
        raise AppsUnavailable(N_("web apps are switched off on this portal (apps_port = 0)"))
    view = member_apps(svc, member)
    spec = view.get(app)
    if view.status != "Running" or view.container is None:
        raise Conflict(N_("start your container first"))
    container = view.container
    _, runtime, _ = _runtime(svc, member)
    with _lock(member, app):
        if view.local:
            target = AppTarget(member, spec, socket_path(svc, member, app))
            _ensure_device(svc, runtime, container, spec, target.socket)
        else:
            target = _relay_target(svc, member, container, spec)
            _check_forwarder(runtime, container, member)
        _ensure_running(svc, runtime, container, member, spec)
    with svc.session() as session:
        svc.audit(session, "app.open", member, app=app)
    return target


def _check_forwarder(runtime: RuntimeClient, container: str, member: str) -> None:
    """The relay's forwarder needs python3 in the container (as nobody, isolated, with its sockets)."""
    try:
        result = runtime.instances.exec(
            container,
            ["python3", "-I", "-S", "-c", "import os, select, socket, sys"],
            user=FORWARDER_USER,
            group=FORWARDER_USER,
            cwd="/",
            timeout=15,
        )
    except RuntimeNotFound:
        raise Conflict(N_("start your container first")) from None
    except RuntimeBadRequest as exc:  # Incus: "Command not found" (LXD runs it: exit status 127)
        log.info("no python3 for the app relay in %s: %s", container, exc)
        result = None
    if result is None or not result.ok:
        raise AppsUnavailable(
            N_(
                "web apps of a container on another host need python3 in the container; "
                "%(member)s's container has none that works"
            ),
            values={"member": member},
            hint="install python3 in the container (apt install python3-minimal), or build its template with it",
        )


def _ensure_device(
    svc: Services, runtime: RuntimeClient, container: str, app: rules.AppDef, sock: Path
) -> None:
    folder = _socket_dir(svc)
    device = {
        "type": "proxy",
        "listen": f"unix:{sock}",
        "connect": f"tcp:127.0.0.1:{app.port}",
        "bind": "host",
        "mode": "0600",
        "uid": str(os.getuid()),
        "gid": str(os.getgid()),
    }
    inst = runtime.instances.get(container)
    if inst.devices.get(app.device) == device and sock.exists():
        return
    # check_safe on the one device added (the rest of the container is the reconciler's, checked there).
    check_safe({}, {app.device: device}, allowed_roots=[], app_socket_dir=str(folder))
    if app.device in inst.devices:  # stale (the socket went away): make the daemon listen again
        runtime.instances.remove_device(container, app.device)
    runtime.instances.add_device(container, app.device, device)


def _user_env(svc: Services, member: str) -> tuple[str, str]:
    user = svc.settings.container_user
    home = svc.settings.container_home.format(name=member)
    return user, home


def _ensure_running(
    svc: Services, runtime: RuntimeClient, container: str, member: str, app: rules.AppDef
) -> None:
    state = runtime.instances.exec(container, ["systemctl", "is-active", app.unit], timeout=15).stdout.strip()
    if state in ("active", "activating"):
        return
    user, home = _user_env(svc, member)
    argv = app.argv(base_url=rules.base_url(member, app.name), home=home)
    command = [
        "systemd-run",
        f"--unit={app.unit}",
        f"--uid={user}",
        f"--gid={user}",
        f"--working-directory={home}",
        f"--setenv=HOME={home}",
        f"--setenv=USER={user}",
        "--setenv=PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
        "--setenv=SHELL=/bin/bash",
        "--collect",
        "--quiet",
        "--",
        *argv,
    ]
    if state == "failed":
        runtime.instances.exec(container, ["systemctl", "reset-failed", app.unit], timeout=15)
    result = runtime.instances.exec(container, command, timeout=START_TIMEOUT)
    if not result.ok:
        raise BadInput(
            N_("%(app)s did not start: %(reason)s"),
            values={"app": app.title, "reason": (result.stderr or result.stdout).strip()[-300:]},
        )


def stop_app(svc: Services, member: str, app: str) -> None:
    """Stop ``member``'s ``app`` (its unit; the proxy device stays). Audited as ``app.stop``."""
    view = member_apps(svc, member)
    spec = view.get(app)
    if view.status == "Running" and view.container is not None:
        _, runtime, _ = _runtime(svc, member)
        runtime.instances.exec(view.container, ["systemctl", "stop", spec.unit], timeout=60)
    with svc.session() as session:
        svc.audit(session, "app.stop", member, app=app)
