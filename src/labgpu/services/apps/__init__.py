"""apps: web apps (JupyterLab, code-server, TensorBoard, and apps a template declares) in members' containers,
and members' files in the browser.

Which apps a container has, their states, starting and stopping them (``start_app``: the proxy device whose
host side is a unix socket only labgpu opens, then the app as a systemd unit), the relays to apps in containers
on other hosts (``AppRelays``: the portal's own socket, each connection an exec through the daemon's API),
one-time tickets and app cookies
for the apps origin (``Tickets``), rate limits, and the home's files (``list_folder``, ``download``,
``upload``: streamed). The public face of ``services/apps``: web/ imports only this module.
"""

from __future__ import annotations

from labgpu.services.apps._apps import (
    AppsUnavailable,
    AppTarget,
    MemberApps,
    app_states,
    app_target,
    member_apps,
    socket_path,
    start_app,
    stop_app,
)
from labgpu.services.apps._files import (
    Download,
    FileEntry,
    Folder,
    UploadTooLarge,
    download,
    list_folder,
    upload,
)
from labgpu.services.apps._grants import Grant, RateLimited, RateLimiter, Tickets
from labgpu.services.apps._relay import AppRelays, Relay

__all__ = [
    "AppRelays",
    "AppTarget",
    "AppsUnavailable",
    "Download",
    "FileEntry",
    "Folder",
    "Grant",
    "MemberApps",
    "RateLimited",
    "RateLimiter",
    "Relay",
    "Tickets",
    "UploadTooLarge",
    "app_states",
    "app_target",
    "download",
    "list_folder",
    "member_apps",
    "socket_path",
    "start_app",
    "stop_app",
    "upload",
]
