"""Web apps in members' containers (JupyterLab, code-server, TensorBoard, and apps an admin declares in a
template), and the paths of the members' files: pure rules, no I/O.

An app listens on the container's loopback at ``port``; the portal proxies ``/m/MEMBER/APP/...`` on its
apps origin to it. ``base_path`` says how the app takes that prefix: ``prefix`` (the app is told its base
URL, e.g. Jupyter's ``base_url``, and serves under it) or ``strip`` (the app serves at ``/`` with relative
links, e.g. code-server: the proxy strips the prefix). ``command`` is an argument list run as the container's
user; ``{port}``, ``{base_url}`` (``{base_url_no_slash}``) and ``{home}`` in it are replaced, nothing is ever run through a shell.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from labgpu.errors import N_, BadInput

APP_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]\Z")
#: The image property (and so the container's ``image.labgpu.apps`` config key) that lists a template's apps.
APPS_PROPERTY = "labgpu.apps"
APPS_CONFIG_KEY = "image." + APPS_PROPERTY
#: Proxy devices that carry apps are named so; the reconciler leaves them alone (they are made on demand).
DEVICE_PREFIX = "app-"
PLACEHOLDERS = ("{port}", "{base_url}", "{base_url_no_slash}", "{home}")
BasePath = Literal["prefix", "strip"]


@dataclass(frozen=True)
class AppDef:
    """One web app of a template."""

    name: str
    title: str
    port: int
    base_path: BasePath
    command: tuple[str, ...]

    def argv(self, *, base_url: str, home: str) -> list[str]:
        """The command with its placeholders filled in (an argument list)."""
        values = {
            "{port}": str(self.port),
            "{base_url}": base_url,
            "{base_url_no_slash}": base_url.rstrip("/"),
            "{home}": home,
        }
        out = []
        for arg in self.command:
            for key, value in values.items():
                arg = arg.replace(key, value)
            out.append(arg)
        return out

    @property
    def unit(self) -> str:
        """The systemd unit the app runs as inside the container."""
        return f"labgpu-app-{self.name}.service"

    @property
    def device(self) -> str:
        return DEVICE_PREFIX + self.name


# Built-in apps: a template lists them by name. Their programs are looked up on PATH (/usr/local/bin).
BUILTIN_APPS: dict[str, AppDef] = {
    "jupyterlab": AppDef(
        name="jupyterlab",
        title="JupyterLab",
        port=18888,
        base_path="prefix",
        command=(
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            "--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            "--ServerApp.base_url={base_url}",
            "--ServerApp.root_dir={home}",
            # The portal authenticates every request; the app gets no token or password of its own. Only the
            # portal's apps origin reaches it (loopback inside the container, a root-only socket on the host).
            "--IdentityProvider.token=",
            "--ServerApp.password=",
            # Requests arrive with the portal's Host header, not localhost; Jupyter's own XSRF check and its
            # WebSocket Origin check (Origin must match Host) stay on.
            "--ServerApp.allow_remote_access=True",
        ),
    ),
    "code-server": AppDef(
        name="code-server",
        title="VS Code",
        port=18080,
        base_path="strip",
        command=(
            "code-server",
            "--auth=none",
            "--bind-addr=127.0.0.1:{port}",
            "--disable-telemetry",
            "--disable-update-check",
            "{home}",
        ),
    ),
    "tensorboard": AppDef(
        name="tensorboard",
        title="TensorBoard",
        port=16006,
        base_path="prefix",
        command=(
            "tensorboard",
            "--logdir={home}/runs",
            "--host=127.0.0.1",
            "--port={port}",
            "--path_prefix={base_url_no_slash}",
        ),
    ),
}


def base_url(member: str, app: str) -> str:
    """The path prefix of an app on the apps origin."""
    return f"/m/{member}/{app}/"


def check_app(data: Mapping[str, Any]) -> AppDef:
    """An app definition from a template spec or an image property; raises BadInput naming the problem."""
    name = data.get("name")
    if not isinstance(name, str) or not APP_NAME_RE.match(name):
        raise BadInput(N_("invalid app name %(name)r"), values={"name": str(name)[:40]})
    builtin = BUILTIN_APPS.get(name)
    port = data.get("port", builtin.port if builtin else None)
    if not isinstance(port, int) or isinstance(port, bool) or not 1024 <= port <= 65535:
        raise BadInput(N_("app %(name)s: port must be a number from 1024 to 65535"), values={"name": name})
    base = data.get("base_path", builtin.base_path if builtin else "prefix")
    if base not in ("prefix", "strip"):
        raise BadInput(N_("app %(name)s: base_path must be prefix or strip"), values={"name": name})
    command = data.get("command", list(builtin.command) if builtin else None)
    if (
        not isinstance(command, list | tuple)
        or not command
        or not all(isinstance(a, str) and "\x00" not in a and "\n" not in a for a in command)
    ):
        raise BadInput(
            N_("app %(name)s: command must be a list of arguments (no shell string)"), values={"name": name}
        )
    title = data.get("title", builtin.title if builtin else name)
    if not isinstance(title, str) or not 0 < len(title) <= 40 or any(c in title for c in "<>\"'\n"):
        raise BadInput(N_("app %(name)s: invalid title"), values={"name": name})
    return AppDef(name=name, title=title, port=port, base_path=base, command=tuple(command))


def encode_apps(apps: Iterable[AppDef]) -> str:
    """The image property's value for ``apps``."""
    return json.dumps([asdict(a) | {"command": list(a.command)} for a in apps], separators=(",", ":"))


def decode_apps(value: str | None) -> list[AppDef]:
    """The apps an image property lists; [] for none or a value that is not a valid list (never raises)."""
    if not value:
        return []
    try:
        data = json.loads(value)
        apps = [check_app(item) for item in data] if isinstance(data, list) else []
    except (ValueError, BadInput):
        return []
    names = [a.name for a in apps]
    ports = [a.port for a in apps]
    if len(set(names)) != len(names) or len(set(ports)) != len(ports):
        return []
    return apps


# Files in the home ---------------------------------------------------------------------------------

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def home_path(home: str, relative: str) -> str:
    """The absolute path of ``relative`` inside ``home`` (the container's view). Raises BadInput for an
    absolute path, ``..``, control characters or a backslash: nothing outside the home is ever named."""
    relative = relative.strip("/") if relative else ""
    if len(relative) > 1024 or _BAD_CHARS.search(relative):
        raise BadInput(N_("invalid path"))
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BadInput(N_("invalid path: '..' is not allowed"))
    if any(len(p.encode()) > 255 for p in parts):
        raise BadInput(N_("invalid path: a name is too long"))
    joined = posixpath.join(home, *parts) if parts else home
    if joined != home and not joined.startswith(home.rstrip("/") + "/"):
        raise BadInput(N_("invalid path"))
    return joined


def file_name(name: str) -> str:
    """A file name to upload (one path component)."""
    name = name.strip()
    if not name or name in (".", "..") or "/" in name or _BAD_CHARS.search(name) or len(name.encode()) > 255:
        raise BadInput(N_("invalid file name"))
    return name
