"""Package mirrors in a member's container: /etc/apt/sources.list, /etc/pip.conf and the user's ~/.condarc,
from the settings apt_mirror, pip_index_url and conda_mirror (labgpu.domain.mirrors).

A new container gets them at its first provisioning. ``reconcile`` brings running containers to a changed
setting, but only files that still start with labgpu's marker: a member who deleted that line keeps their own
edits. A setting emptied again takes labgpu's files back out (pip, conda) or to the distribution's own
servers (apt). Through the daemon's file API: a few requests, no process started in the container."""

from __future__ import annotations

from dataclasses import dataclass

from labgpu.domain import mirrors as m
from labgpu.runtime.errors import RuntimeError_, RuntimeNotFound
from labgpu.services.context import Services

#: Bigger files are not read back (they are not labgpu's).
MAX_READ = 256 * 1024


@dataclass(frozen=True)
class MirrorChange:
    path: str
    action: str  # "written", "removed"


def configured(svc: Services) -> m.Mirrors:
    s = svc.settings
    return m.Mirrors.from_settings(s.apt_mirror, s.pip_index_url, s.conda_mirror)


def mirrors_configured(svc: Services) -> bool:
    """Whether any mirror setting is set (a new container then gets files)."""
    want = configured(svc)
    return bool(want.apt or want.pip or want.conda)


def _read(svc: Services, container: str, path: str) -> str | None:
    try:
        data = svc.runtime.instances.pull_file(container, path)
    except RuntimeNotFound:
        return None
    if len(data) > MAX_READ:
        return "(too big to be labgpu's)"
    return data.decode("utf-8", errors="replace")


def apply_mirrors(svc: Services, container: str, *, new_container: bool = False) -> list[MirrorChange]:
    """Bring the container's mirror files to the settings (see the module). Returns what changed. Raises
    runtime errors when the daemon refuses a request."""
    want = configured(svc)
    if new_container and not (want.apt or want.pip or want.conda):
        return []  # a new container holds no file of labgpu's to take back: nothing to read (member add's path)
    user = svc.settings.container_user
    changes: list[MirrorChange] = []
    runtime = svc.runtime

    def put(path: str, text: str | None, *, uid: int = 0, remove_ok: bool = True) -> None:
        current = _read(svc, container, path)
        if text is None:
            # Nothing wanted: a file of labgpu's goes; anything else is left alone.
            if remove_ok and current is not None and m.should_write(current, new_container=False):
                runtime.instances.delete_file(container, path)
                changes.append(MirrorChange(path, "removed"))
            return
        if current == text or not m.should_write(current, new_container=new_container):
            return
        runtime.instances.push_file(container, path, text.encode(), uid=uid, gid=uid, mode=0o644)
        changes.append(MirrorChange(path, "written"))

    # /etc/os-release is usually a symlink, which the file API answers with its target's name.
    os_release = (
        _read(svc, container, "/usr/lib/os-release") or _read(svc, container, "/etc/os-release") or ""
    )
    family, codename = m.os_family(os_release)
    current_apt = _read(svc, container, m.APT_SOURCES)
    marked_apt = current_apt is not None and m.should_write(current_apt, new_container=False)
    if want.apt or marked_apt:
        sources = m.apt_sources(want.apt, family=family, codename=codename)
        if sources is not None:
            put(m.APT_SOURCES, sources, remove_ok=False)
            if new_container and want.apt:
                # deb822 files of the image (Ubuntu 24.04's ubuntu.sources, Debian 13's debian.sources)
                # would still send apt to the distribution's servers.
                for name in ("ubuntu.sources", "debian.sources"):
                    path = f"/etc/apt/sources.list.d/{name}"
                    try:
                        runtime.instances.delete_file(container, path)
                        changes.append(MirrorChange(path, "removed"))
                    except (RuntimeNotFound, RuntimeError_):
                        pass
    put(m.PIP_CONF, m.pip_conf(want.pip))
    home = f"/home/{user}"
    uid = _uid(svc, container, user) if want.conda else 0
    put(f"{home}/.condarc", m.condarc(want.conda), uid=uid)
    return changes


def _uid(svc: Services, container: str, user: str) -> int:
    passwd = _read(svc, container, "/etc/passwd") or ""
    for line in passwd.splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == user and fields[2].isdigit():
            return int(fields[2])
    return 1000
