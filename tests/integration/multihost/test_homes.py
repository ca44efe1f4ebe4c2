"""Homes that live on each host's own disk (homes_shared off) are copied with rsync over SSH on a move.

There is one machine here, so the copy itself is tested for real between two LOCAL folders (the same
rsync with the same options; over SSH only the transport differs), and the SSH command lines for the
remote cases are checked as they would run. Moves between the test daemons use shared storage (one
filesystem): see test_moves.py.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from labgpu.services.context import Actor, Services
from labgpu.services.members._homes import (
    HomeCopyFailed,
    ensure_home_on,
    sync_folder,
    transfer_home,
)
from labgpu.settings import load_settings
from labgpu.store.models import Host, HostKind

pytestmark = pytest.mark.integration


def test_rsync_copy_keeps_owners_modes_links_and_drops_stale_files(tmp_path: Path) -> None:
    src, dst = tmp_path / "host-a" / "alice", tmp_path / "host-b" / "alice"
    (src / "proj" / "deep").mkdir(parents=True)
    (src / "proj" / "deep" / "data.bin").write_bytes(os.urandom(4096))
    (src / "notes.txt").write_text("hello\n")
    os.link(src / "notes.txt", src / "notes-hardlink.txt")
    (src / "link").symlink_to("proj/deep/data.bin")
    (src / "secret").write_text("s\n")
    (src / "secret").chmod(0o600)
    for p in [src, *src.rglob("*")]:
        os.lchown(p, 70123, 70123)
    src.chmod(0o700)
    dst.mkdir(parents=True)
    (dst / "stale.txt").write_text("from an older copy\n")

    sync_folder(str(src), str(dst))

    assert (dst / "notes.txt").read_text() == "hello\n"
    assert (dst / "proj" / "deep" / "data.bin").read_bytes() == (
        src / "proj" / "deep" / "data.bin"
    ).read_bytes()
    assert os.readlink(dst / "link") == "proj/deep/data.bin"
    assert (dst / "notes.txt").stat().st_ino == (dst / "notes-hardlink.txt").stat().st_ino
    assert not (dst / "stale.txt").exists()
    for p in [dst, *dst.rglob("*")]:
        st = os.lstat(p)
        assert (st.st_uid, st.st_gid) == (70123, 70123), p
    assert (dst / "secret").stat().st_mode & 0o777 == 0o600
    assert dst.stat().st_mode & 0o777 == 0o700

    with pytest.raises(HomeCopyFailed, match="rsync"):
        sync_folder(str(tmp_path / "nope"), str(dst))


class Recorder:
    """FAKE runner: records the commands instead of running them (they would SSH to other machines)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")


def _svc(tmp_path: Path, **overrides: str) -> Services:
    settings = load_settings(state_dir=str(tmp_path), home_base="/srv/home", **overrides)
    return Services(settings=settings, runtime=None, sessions=None, actor=Actor("t"))  # type: ignore[arg-type]


def _host(name: str, url: str | None) -> Host:
    return Host(name=name, url=url, kind=HostKind.INCUS)


def test_remote_home_commands(tmp_path: Path) -> None:
    svc = _svc(tmp_path, host_ssh_command="ssh -o BatchMode=yes -p 2222")
    local, a, b = (
        _host("here", None),
        _host("a", "https://10.0.0.2:8443"),
        _host("b", "https://10.0.0.3:8443?cluster=x&target=b"),
    )
    run = Recorder()

    assert "copied /srv/home/alice to b" in transfer_home(svc, local, b, "alice", run=run)
    assert run.calls[-1] == [
        "rsync", "-aHAX", "--numeric-ids", "--delete", "-e", "ssh -o BatchMode=yes -p 2222",
        "/srv/home/alice/", "root@10.0.0.3:/srv/home/alice/",
    ]  # fmt: skip
    assert run.calls[-2][:5] == ["ssh", "-o", "BatchMode=yes", "-p", "2222"]  # mkdir -p of the base there

    transfer_home(svc, a, b, "alice", run=run)
    remote = run.calls[-1]
    assert remote[:6] == ["ssh", "-o", "BatchMode=yes", "-p", "2222", "root@10.0.0.2"]
    assert shlex.split(remote[6]) == [
        "rsync", "-aHAX", "--numeric-ids", "--delete", "-e", "ssh -o BatchMode=yes -p 2222",
        "/srv/home/alice/", "root@10.0.0.3:/srv/home/alice/",
    ]  # fmt: skip

    ensure_home_on(svc, a, "alice", 70001, run=run)
    script = run.calls[-1][-1]
    assert "chown 70001:70001 /srv/home/alice" in script and "mkdir -m 700 /srv/home/alice" in script

    shared = _svc(tmp_path, homes_shared="true")
    calls = len(run.calls)
    assert transfer_home(shared, a, b, "alice", run=run) == "homes are on shared storage: nothing to copy"
    assert len(run.calls) == calls
