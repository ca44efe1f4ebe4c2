"""Attribution of host processes to containers, on REAL cgroup files captured from LXD and Incus
containers on this kind of machine (cgroup v1 hybrid) and on files constructed from the documented
liblxc layouts (pure cgroup v2, pure v1, liblxc 3.x): see tests/fixtures/gpu/README.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labgpu.gpu.attribution import (
    OwnerKind,
    ProcessOwner,
    attribute_pids,
    command_of_pid,
    container_of_pid,
    parse_cgroup_file,
)
from labgpu.gpu.fake import write_proc_tree

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "cgroup"


def _cases(kind: str) -> list[tuple[Path, dict[str, str | None]]]:
    manifest = json.loads((FIXTURES / kind / "manifest.json").read_text())
    return [(FIXTURES / kind / f["file"], f) for f in manifest["files"]]


CAPTURED = _cases("captured")
CONSTRUCTED = _cases("constructed")


def test_captured_files_come_from_both_daemons() -> None:
    daemons = {str(f["daemon"]).split()[0] for _, f in CAPTURED}
    assert daemons == {"lxd", "incus"}
    kinds = {(str(f["daemon"]).split()[0], f["kind"]) for _, f in CAPTURED}
    for daemon in ("lxd", "incus"):
        assert {(daemon, "container"), (daemon, "host"), (daemon, "monitor")} <= kinds
    # A non-default project, and processes nested below the container's own cgroup.
    assert any(f["project"] for _, f in CAPTURED)
    assert any("system.slice" in p.read_text() for p, _ in CAPTURED)
    assert any("user.slice" in p.read_text() for p, _ in CAPTURED)


@pytest.mark.parametrize(("path", "expect"), CAPTURED + CONSTRUCTED, ids=lambda v: getattr(v, "name", ""))
def test_cgroup_file_is_attributed_as_expected(path: Path, expect: dict[str, str | None]) -> None:
    owner = parse_cgroup_file(path.read_text())
    assert owner.kind.value == expect["kind"]
    assert owner.container == expect["container"]
    assert owner.project == expect["project"]


def test_container_of_pid_reads_the_proc_tree(tmp_path: Path) -> None:
    sshd = FIXTURES / "captured" / "lxd" / "systemd-sshd.cgroup"
    host = FIXTURES / "captured" / "incus" / "host-process.cgroup"
    write_proc_tree(tmp_path, {100: (sshd.read_text(), "sshd"), 200: (host.read_text(), "python3")})
    owner = container_of_pid(100, proc_root=tmp_path)
    assert owner.kind is OwnerKind.CONTAINER and owner.container.startswith("cap-sd-")  # type: ignore[union-attr]
    assert "system.slice/ssh.service" in owner.cgroup
    assert container_of_pid(200, proc_root=tmp_path).kind is OwnerKind.HOST
    assert command_of_pid(100, proc_root=tmp_path) == "sshd"


def test_a_process_that_is_gone_or_unreadable_is_unknown_not_an_error(tmp_path: Path) -> None:
    gone = container_of_pid(4242, proc_root=tmp_path)
    assert gone.kind is OwnerKind.UNKNOWN and "gone" in gone.detail
    (tmp_path / "7" / "cgroup").mkdir(parents=True)  # unreadable as a file
    odd = container_of_pid(7, proc_root=tmp_path)
    assert odd.kind is OwnerKind.UNKNOWN and "cannot read" in odd.detail
    assert command_of_pid(4242, proc_root=tmp_path) == ""


def test_each_pid_is_read_once(tmp_path: Path) -> None:
    write_proc_tree(tmp_path, {1: ("0::/lxc.payload.a\n", "x")})
    owners = attribute_pids([1, 1, 2, 1], proc_root=tmp_path)
    assert list(owners) == [1, 2]
    assert owners[1].container == "a" and owners[2].kind is OwnerKind.UNKNOWN


@pytest.mark.parametrize(
    ("owner", "label"),
    [
        (ProcessOwner(OwnerKind.CONTAINER, container="alice"), "alice"),
        (ProcessOwner(OwnerKind.CONTAINER, container="bob", project="lab"), "lab/bob"),
        (ProcessOwner(OwnerKind.HOST), "host"),
        (ProcessOwner(OwnerKind.MONITOR, container="alice"), "alice (lxc monitor)"),
        (ProcessOwner(OwnerKind.UNKNOWN), "?"),
    ],
)
def test_labels(owner: ProcessOwner, label: str) -> None:
    assert owner.label == label


def test_a_container_named_host_is_still_a_container() -> None:
    owner = parse_cgroup_file("0::/lxc.payload.host/init.scope\n")
    assert owner.kind is OwnerKind.CONTAINER and owner.container == "host"


def test_lookalike_host_cgroups_are_not_containers() -> None:
    for text in (
        "0::/system.slice/lxc.service\n",
        "0::/lxc.payload.\n",
        "0::/lxc\n",
        "0::/system.slice/lxd.service\n",
    ):
        assert parse_cgroup_file(text).kind is OwnerKind.HOST, text
