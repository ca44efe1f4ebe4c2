"""The web apps' and files' settings (issue 16: JupyterLab, VS Code and TensorBoard through the portal, the home's
files in the browser), declared beside each other as the sign-on settings are. :class:`Settings`
(``labgpu.settings``) takes them in as they are: ``apps_port`` is ``LABGPU_APPS_PORT`` and so on. Used by
``services/apps`` and ``web/routes/apps``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class AppsSettings(BaseModel):
    """Members' web apps (the apps origin) and their files in the browser; see docs/admin/apps.md."""

    apps_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="Port of the apps origin: `labgpu serve` serves members' web apps (JupyterLab, VS Code, "
        "TensorBoard) there, on web_host, apart from the portal's own origin so that an app's pages cannot "
        "use the portal's login. 0: no web apps.",
    )
    apps_url: str | None = Field(
        None,
        description="The apps origin as browsers reach it (e.g. https://apps.gpu.lab.edu/ behind a TLS proxy). "
        "Empty: the portal's own scheme and host name with apps_port.",
    )
    apps_socket_dir: Path | None = Field(
        None,
        description="Folder of the unix sockets through which the portal reaches the apps in containers "
        "(proxy devices on this host; the portal's own relays to containers on other hosts; mode 0700, "
        "labgpu's only). Empty: state_dir/apps. Keep the path short (a socket "
        "path has at most 107 bytes).",
    )
    apps_requests_per_minute: int = Field(
        6000,
        ge=10,
        description="Requests one login may send to one app per minute through the portal; more get HTTP 429.",
    )
    apps_opens_per_minute: int = Field(
        20, ge=1, description="App starts and opens one login may ask for per minute; more get HTTP 429."
    )
    upload_max_mb: int = Field(
        2048, ge=1, description="Largest file a member may upload to their home in the browser, in MiB."
    )

    def app_socket_dir(self) -> Path:
        """Where the web apps' proxy sockets are (apps_socket_dir, else state_dir/apps)."""
        explicit: Path | None = self.apps_socket_dir
        state_dir: Path = getattr(self, "state_dir")  # noqa: B009 - Settings' own field, beside this mixin
        return explicit or state_dir / "apps"
