"""Running host commands: argument lists only, with a timeout, failures as LabgpuError."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from labgpu.errors import LabgpuError

SUBPROCESS_TIMEOUT = 60
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def run(args: Sequence[str], *, what: str, input_text: str | None = None) -> str:
    """Run ``args`` (never through a shell) and return its output. Waits up to a minute.

    Raises LabgpuError naming ``what`` when the program is missing, times out or exits non-zero."""
    try:
        done = subprocess.run(
            list(args),
            input=input_text,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise LabgpuError(f"{what}: {args[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabgpuError(f"{what}: {args[0]} did not finish within {SUBPROCESS_TIMEOUT}s") from None
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip().splitlines()
        raise LabgpuError(f"{what} failed: {reason[-1] if reason else f'exit code {done.returncode}'}")
    return done.stdout


def which(tool: str, path: str = SYSTEM_PATH) -> str | None:
    """Where ``tool`` is in the system folders (not the caller's PATH), or None."""
    return shutil.which(tool, path=path)
