"""Package mirrors for members' containers: apt, pip and conda, from a campus mirror or a well-known one.

Settings ``apt_mirror``, ``pip_index_url`` and ``conda_mirror`` each take a preset name (:data:`PRESETS`) or
a URL. The files labgpu writes into a container start with :data:`MARKER`; a file without it is the
member's (they deleted the line to keep their own edits) and is never touched again. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from labgpu.settings_network import PRESETS, check_mirror

__all__ = ["PRESETS", "check_mirror"]  # re-exported: the presets are the settings'

MARKER = "# labgpu: managed (mirror settings); delete this line to keep your own edits"

APT_SOURCES = "/etc/apt/sources.list"
PIP_CONF = "/etc/pip.conf"


def _resolve(value: str, index: int) -> str | None:
    if not value:
        return None
    return PRESETS[value][index] if value in PRESETS else value


@dataclass(frozen=True)
class Mirrors:
    """The resolved mirrors (None: the distribution's or the tool's own default)."""

    apt: str | None
    pip: str | None
    conda: str | None

    @classmethod
    def from_settings(cls, apt: str, pip: str, conda: str) -> Mirrors:
        return cls(_resolve(apt, 0), _resolve(pip, 1), _resolve(conda, 2))

    @property
    def hosts(self) -> list[tuple[str, str, int]]:
        """(what, host, port) of every configured mirror, for reachability checks."""
        out = []
        for what, url in (("apt", self.apt), ("pip", self.pip), ("conda", self.conda)):
            if url:
                parts = urlsplit(url)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                out.append((what, parts.hostname or "", port))
        return out


def apt_sources(mirror: str | None, *, family: str, codename: str) -> str | None:
    """sources.list for a Debian or Ubuntu ``codename`` from the mirror's root (None: the distribution's own
    servers). None when the distribution is neither (labgpu then leaves apt alone)."""
    if family not in ("debian", "ubuntu") or not re.fullmatch(r"[a-z]+", codename or ""):
        return None
    lines = [MARKER]
    if family == "ubuntu":
        root = f"{mirror}/ubuntu" if mirror else "http://archive.ubuntu.com/ubuntu"
        security = f"{mirror}/ubuntu" if mirror else "http://security.ubuntu.com/ubuntu"
        comps = "main restricted universe multiverse"
        lines += [f"deb {root} {codename}{s} {comps}" for s in ("", "-updates", "-backports")]
        lines.append(f"deb {security} {codename}-security {comps}")
    else:
        root = f"{mirror}/debian" if mirror else "http://deb.debian.org/debian"
        security = f"{mirror}/debian-security" if mirror else "http://deb.debian.org/debian-security"
        comps = "main contrib non-free non-free-firmware"
        lines += [f"deb {root} {codename} {comps}", f"deb {root} {codename}-updates {comps}"]
        lines.append(f"deb {security} {codename}-security {comps}")
    return "\n".join(lines) + "\n"


def pip_conf(index: str | None) -> str | None:
    """/etc/pip.conf for the index (None: no file, pip's own default)."""
    if not index:
        return None
    parts = urlsplit(index)
    trusted = f"trusted-host = {parts.hostname}\n" if parts.scheme == "http" else ""
    return f"{MARKER}\n[global]\nindex-url = {index}\n{trusted}"


def condarc(root: str | None) -> str | None:
    """The user's ~/.condarc for an anaconda mirror's root (None: no file, conda's own channels)."""
    if not root:
        return None
    return (
        f"{MARKER}\n"
        "channels:\n  - defaults\n"
        "show_channel_urls: true\n"
        "default_channels:\n"
        f"  - {root}/pkgs/main\n  - {root}/pkgs/r\n"
        "custom_channels:\n"
        f"  conda-forge: {root}/cloud\n  pytorch: {root}/cloud\n  nvidia: {root}/cloud\n"
    )


def os_family(os_release: str) -> tuple[str, str]:
    """(family, codename) from /etc/os-release's text: family debian or ubuntu (ID or ID_LIKE), else ID."""
    values: dict[str, str] = {}
    for line in os_release.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip()] = value.strip().strip('"')
    ids = [values.get("ID", ""), *values.get("ID_LIKE", "").split()]
    family = "ubuntu" if "ubuntu" in ids else "debian" if "debian" in ids else values.get("ID", "")
    codename = values.get("UBUNTU_CODENAME") or values.get("VERSION_CODENAME") or ""
    return family, codename


def should_write(current: str | None, *, new_container: bool) -> bool:
    """Whether labgpu may (re)write a file: a new container's (nothing is the member's yet), one that does
    not exist, or one that still starts with the marker."""
    if new_container or current is None:
        return True
    return current.splitlines()[:1] == [MARKER]
