"""Kernel limits: read from /proc/sys, raised there now and at every boot by a sysctl.d file.

Keys are /proc/sys paths (``fs/inotify/max_user_instances``); :func:`sysctl_name` gives sysctl's dotted
name. Callers pass the /proc/sys folder and the sysctl.d file, so tests point them at a temporary place.
"""

from __future__ import annotations

from pathlib import Path

from labgpu.system.files import write_file_atomically

# The kernel limits LXD's and Incus's production setup guides raise. Every running systemd container takes
# about 8 inotify instances and all unprivileged containers count as one host user: with Debian's default of
# 128 only about 16 containers run at once, and the next one's init dies at boot ("Too many open files").
KERNEL_LIMITS: dict[str, int] = {
    "fs/inotify/max_user_instances": 1048576,
    "fs/inotify/max_user_watches": 1048576,
    "fs/inotify/max_queued_events": 1048576,
    "vm/max_map_count": 262144,
}
SYSCTL_CONF_NAME = "60-labgpu.conf"


def sysctl_name(key: str) -> str:
    """fs.inotify.max_user_instances from fs/inotify/max_user_instances."""
    return key.replace("/", ".")


def read_kernel_limits(proc_sys: Path) -> dict[str, int]:
    """The KERNEL_LIMITS keys that can be read under ``proc_sys``, with their values."""
    found: dict[str, int] = {}
    for key in KERNEL_LIMITS:
        try:
            found[key] = int((proc_sys / key).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return found


def render_conf(values: dict[str, int]) -> str:
    """The sysctl.d file that sets ``values`` at every boot."""
    return (
        "# Written by `labgpu host init`: the limits LXD's and Incus's production guides raise\n"
        "# (about 16 system containers can run with Debian's default of 128 inotify instances).\n"
        + "".join(f"{sysctl_name(k)} = {v}\n" for k, v in values.items())
    )


def read_conf(conf: Path) -> str | None:
    """The sysctl.d file's text, or None when it cannot be read."""
    try:
        return conf.read_text()
    except OSError:
        return None


def write_limits(proc_sys: Path, conf: Path, *, text: str | None, now: dict[str, int]) -> None:
    """Write the sysctl.d file ``conf`` (when ``text`` is given) and set ``now`` under ``proc_sys``.
    Raises OSError when either cannot be written (not root, a read-only /etc)."""
    conf.parent.mkdir(parents=True, exist_ok=True)
    if text is not None:
        write_file_atomically(conf, text)
    for key, value in now.items():
        (proc_sys / key).write_text(f"{value}\n")
