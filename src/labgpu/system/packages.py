"""The Debian/Ubuntu packages labgpu needs on a host, found with dpkg and installed with apt-get.

One list for `labgpu setup` and `scripts/install-deps` (which runs this module with the system's python3,
before any virtualenv exists: so it imports nothing but the standard library and ``labgpu.errors``).

    python3 -m labgpu.system.packages [--no-daemon]   # install what is missing (as root)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from labgpu.errors import ConfigError

# The tools labgpu's commands run on the host: LXC's tools, the firewall for NAT bridges, btrfs for
# copy-on-write pools, debootstrap and busybox for the offline templates, rsync and ssh for moves.
TOOL_PACKAGES = (
    "lxc",
    "iptables",
    "btrfs-progs",
    "debootstrap",
    "busybox-static",
    "rsync",
    "openssh-client",
)
# The daemon, where neither LXD nor Incus answers: LXD 5.0 from Debian 12's main archive (Incus 6.0 comes
# from bookworm-backports; scripts/install-deps --test installs it beside).
DAEMON_PACKAGES = ("lxd",)
APT_TIMEOUT = 1800  # a slow mirror and a dozen packages
APT_LOCK_WAIT = 300  # another apt (unattended-upgrades, another admin) may hold the lock for a while


def wanted_packages(*, daemon: bool) -> list[str]:
    """The packages a host needs; ``daemon``: LXD too (nothing answers yet)."""
    return [*(DAEMON_PACKAGES if daemon else ()), *TOOL_PACKAGES]


def is_debian() -> bool:
    """Whether dpkg and apt-get are here (Debian, Ubuntu and their derivatives)."""
    return shutil.which("dpkg-query") is not None and shutil.which("apt-get") is not None


def installed(package: str) -> bool:
    """Whether dpkg has ``package`` installed."""
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False, timeout=60
    )
    return done.returncode == 0 and "install ok installed" in done.stdout


def missing_packages(packages: Sequence[str]) -> list[str]:
    """Those of ``packages`` that are not installed. Raises ConfigError off Debian/Ubuntu."""
    if not is_debian():
        raise ConfigError(
            "this host has no dpkg/apt-get: labgpu installs its system packages on Debian and Ubuntu only",
            hint=f"install the equivalents of {' '.join(packages)} yourself, then run labgpu setup "
            "--no-packages",
        )
    return [p for p in packages if not installed(p)]


def install_packages(packages: Sequence[str]) -> None:
    """``apt-get update`` then ``apt-get install`` ``packages`` (no recommends), non-interactively.
    Waits up to half an hour. Raises ConfigError when not root or apt-get fails."""
    if not packages:
        return
    if os.geteuid() != 0:
        raise ConfigError(
            f"installing {' '.join(packages)} needs root",
            hint="run labgpu setup as root, or install them and run it with --no-packages",
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
    for args in (
        ["apt-get", *lock, "update", "-qq"],
        ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, env=env, timeout=APT_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{' '.join(args[:3])} did not finish within {APT_TIMEOUT}s") from None
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            raise ConfigError(
                f"apt-get failed: {lines[-1] if lines else f'exit code {done.returncode}'}",
                hint="check the apt sources (a campus mirror in /etc/apt/sources.list) and run it again",
            )


def main(argv: Sequence[str] | None = None) -> int:
    """scripts/install-deps: install the missing packages; ``--no-daemon`` leaves LXD out."""
    args = list(sys.argv[1:] if argv is None else argv)
    unknown = [a for a in args if a != "--no-daemon"]
    if unknown:
        print(
            f"usage: python3 -m labgpu.system.packages [--no-daemon] (not {' '.join(unknown)})",
            file=sys.stderr,
        )
        return 2
    try:
        need = missing_packages(wanted_packages(daemon="--no-daemon" not in args))
        if need:
            print(f"install-deps: installing {' '.join(need)}", flush=True)
            install_packages(need)
    except ConfigError as exc:
        print(f"install-deps: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
