"""Members' home folders across hosts: made where the container lives, copied when it moves.

Every host keeps a member's home at the same path (``home_base/NAME``). Where that path is reachable
from here, labgpu works on it directly: always with ``homes_shared`` (NFS, CephFS: one folder that every
host mounts), and for daemons on this machine. Otherwise the home is on the other host's own disk:
labgpu makes it there over SSH (``host_ssh_user`` with a key, ``host_ssh_command``) and copies it on a
move with rsync over SSH (numeric owners, permissions, ACLs, extended attributes and hard links kept;
files gone from the source are deleted from the copy). Between two remote hosts, the source host runs
rsync to the destination, so it needs SSH access there too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from labgpu.errors import ConfigError, LabgpuError
from labgpu.services.clients import parse_host_url
from labgpu.services.context import Services
from labgpu.services.hosts import is_local
from labgpu.services.members._records import home_dir
from labgpu.store.models import Host

RSYNC = ("rsync", "-aHAX", "--numeric-ids", "--delete")
Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class HomeCopyFailed(LabgpuError):
    reason = "home-copy-failed"


def home_path(svc: Services, name: str) -> Path:
    """The home folder of ``name``, on whichever host (the same path on all of them)."""
    return svc.settings.home_base / name


def reachable_here(svc: Services, host: Host | None) -> bool:
    """Whether ``host``'s home folders are this machine's folders (shared storage or a local daemon)."""
    return svc.settings.homes_shared or is_local(host)


def ssh_login(svc: Services, host: Host) -> str:
    """``user@address`` for SSH to ``host`` (the address labgpu reaches its daemon at)."""
    address = parse_host_url(host.url).hostname if host.url else None
    address = address or host.public_address
    if not address:
        raise ConfigError(f"host {host.name} has no address to reach it over SSH")
    return f"{svc.settings.host_ssh_user}@{address}"


def _ssh(svc: Services) -> list[str]:
    argv = shlex.split(svc.settings.host_ssh_command)
    if not argv:
        raise ConfigError("host_ssh_command is empty")
    return argv


def _run(argv: Sequence[str], what: str, run: Runner) -> None:
    try:
        result = run(list(argv), capture_output=True, text=True, check=False, timeout=24 * 3600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HomeCopyFailed(f"{what} failed: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise HomeCopyFailed(f"{what} failed (exit {result.returncode}): {detail[0][:300]}")


def ensure_home(svc: Services, name: str, uid: int) -> Path:
    """Create the member's host home folder, owned by their uid (mode 0700). Never touches an existing one."""
    base = svc.settings.home_base
    base.mkdir(parents=True, exist_ok=True)
    path = home_dir(svc, name)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return path
    os.chown(path, uid, uid)
    path.chmod(0o700)
    return path


def ensure_home_on(
    svc: Services, host: Host | None, name: str, uid: int, *, run: Runner = subprocess.run
) -> Path:
    """Make sure ``name``'s home exists where ``host`` keeps homes, owned by ``uid`` (mode 0700); an
    existing one is never touched. Raises HomeCopyFailed when the SSH command fails."""
    if reachable_here(svc, host):
        return ensure_home(svc, name, uid)
    assert host is not None
    path = home_path(svc, name)
    # One remote shell line, every value quoted: the path comes from the settings and a validated
    # member name, the uid is a number.
    script = (
        f"mkdir -p {shlex.quote(str(path.parent))} && "
        f"if [ ! -e {shlex.quote(str(path))} ]; then mkdir -m 700 {shlex.quote(str(path))} && "
        f"chown {int(uid)}:{int(uid)} {shlex.quote(str(path))}; fi"
    )
    _run([*_ssh(svc), ssh_login(svc, host), script], f"creating {path} on {host.name}", run)
    return path


def sync_folder(
    source: str, dest: str, *, ssh_command: str | None = None, run: Runner = subprocess.run
) -> None:
    """rsync ``source`` into ``dest`` (each a local path or ``user@host:path``), exactly: owners by
    number, modes, ACLs, xattrs, hard links; files not in the source are removed from the copy."""
    argv = [*RSYNC]
    if ssh_command:
        argv += ["-e", ssh_command]
    argv += [source.rstrip("/") + "/", dest.rstrip("/") + "/"]
    _run(argv, f"rsync {source} -> {dest}", run)


def transfer_home(
    svc: Services, source: Host | None, dest: Host | None, name: str, *, run: Runner = subprocess.run
) -> str:
    """Bring ``name``'s home from ``source``'s disk to ``dest``'s (the container is stopped). Returns
    what was done, for the move's report. Raises HomeCopyFailed."""
    path = str(home_path(svc, name))
    if svc.settings.homes_shared:
        return "homes are on shared storage: nothing to copy"
    here_src, here_dst = is_local(source), is_local(dest)
    if here_src and here_dst:
        return "both hosts are this machine: the home stays where it is"
    ssh = svc.settings.host_ssh_command
    if here_src:
        assert dest is not None
        ensure_parent(svc, dest, run=run)
        sync_folder(path, f"{ssh_login(svc, dest)}:{path}", ssh_command=ssh, run=run)
        return f"copied {path} to {dest.name} with rsync over SSH"
    assert source is not None
    if here_dst:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        sync_folder(f"{ssh_login(svc, source)}:{path}", path, ssh_command=ssh, run=run)
        return f"copied {path} from {source.name} with rsync over SSH"
    assert dest is not None
    ensure_parent(svc, dest, run=run)
    remote = [*RSYNC, "-e", ssh, path + "/", f"{ssh_login(svc, dest)}:{path}/"]
    _run(
        [*_ssh(svc), ssh_login(svc, source), shlex.join(remote)],
        f"rsync of {path} from {source.name} to {dest.name}",
        run,
    )
    return f"copied {path} from {source.name} to {dest.name} with rsync over SSH (run on {source.name})"


def ensure_parent(svc: Services, host: Host, *, run: Runner = subprocess.run) -> None:
    base = shlex.quote(str(svc.settings.home_base))
    _run([*_ssh(svc), ssh_login(svc, host), f"mkdir -p {base}"], f"creating {base} on {host.name}", run)
