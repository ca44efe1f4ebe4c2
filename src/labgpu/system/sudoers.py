"""sudoers: the login gateway's rule, checked by visudo before sudo ever reads it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from labgpu.system.commands import run, which
from labgpu.system.files import MARKER


def sudo_path() -> str:
    """The sudo program (its usual place when it cannot be found)."""
    return which("sudo", path="/usr/bin:/bin:/usr/sbin:/sbin") or "/usr/bin/sudo"


def render_gateway_rule(*, group: str, helper: Path) -> str:
    """The sudoers drop-in: ``group`` may run ``helper`` as root, without a password, and nothing else."""
    return (
        f"{MARKER} (`labgpu host gateway enable`); `labgpu host gateway disable` removes it.\n"
        f"# Members ({group}) may run the gateway helper as root and nothing else. The helper finds\n"
        "# the member from SUDO_UID and only ever reaches that member's own container.\n"
        f"Defaults!{helper} !use_pty, env_reset, !lecture\n"
        f"%{group} ALL=(root) NOPASSWD: {helper}\n"
    )


def check_sudoers(text: str, target: Path) -> None:
    """Have visudo check the rule before sudo sees it (a broken file in sudoers.d breaks sudo for all).
    Raises LabgpuError with visudo's words."""
    visudo = which("visudo") or "visudo"
    fd, tmp = tempfile.mkstemp(prefix="labgpu-sudoers-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        Path(tmp).chmod(0o440)
        run([visudo, "-c", "-q", "-f", tmp], what=f"visudo -c for {target}")
    finally:
        Path(tmp).unlink(missing_ok=True)
