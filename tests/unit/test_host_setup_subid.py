"""subuid/subgid: computing the new file, writing it atomically."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from labgpu.domain.subid import (
    SubidRange,
    add_subid_range,
    clash_with_container_map,
    container_map_range,
    missing_ranges,
    parse_subid,
)
from labgpu.services.hosts._setup import HostPaths, StepStatus
from labgpu.settings import Settings
from labgpu.system.files import write_file_atomically
from labgpu.system.subid import plan_subid
from tests.conftest import DEBIAN_SYSCTL_DEFAULTS, fake_sysctl

DEBIAN = "_lxd:100000:65536\nroot:100000:65536\n"


def test_parse_skips_comments_and_broken_lines() -> None:
    text = "# comment\n\nroot:100000:65536\nbroken\nalice:x:1\nbob:1:0\nalice:165536:65536\n"
    assert parse_subid(text) == [SubidRange("root", 100000, 65536), SubidRange("alice", 165536, 65536)]


def test_adds_the_range_when_root_has_none_there() -> None:
    text, added = add_subid_range(DEBIAN, owner="root", start=200000, count=10000)
    assert added == [SubidRange("root", 200000, 10000)]
    assert text == DEBIAN + "root:200000:10000\n"


def test_existing_lines_are_kept_exactly() -> None:
    original = "# keep me\n_lxd:100000:65536\nroot:100000:65536\nalice:300000:65536"  # no final newline
    text, _ = add_subid_range(original, owner="root", start=200000, count=10000)
    assert text.startswith(original + "\n")
    assert text.splitlines()[:4] == original.splitlines()


def test_nothing_is_added_when_root_ranges_cover_it() -> None:
    original = "root:100000:65536\nroot:195000:10000\nroot:205000:5000\n"
    text, added = add_subid_range(original, owner="root", start=200000, count=10000)
    assert added == []
    assert text == original


def test_the_containers_range_is_roots_first_big_range() -> None:
    ranges = parse_subid("root:1000:1000\n_lxd:100000:65536\nroot:100000:10000001\nroot:20000000:65536\n")
    assert container_map_range(ranges) == SubidRange("root", 100000, 10000001)
    assert container_map_range(parse_subid("root:1000:1000\n")) is None


def test_members_range_inside_the_containers_range_is_a_clash() -> None:
    ranges = parse_subid("root:100000:10000001\n")
    assert clash_with_container_map(ranges, start=200000, count=10000) == SubidRange("root", 100000, 10000001)
    assert clash_with_container_map(ranges, start=95000, count=10000) is not None  # straddles the start
    assert clash_with_container_map(ranges, start=70000, count=10000) is None


def test_plan_refuses_to_add_inside_the_containers_range(tmp_path: Path) -> None:
    path = tmp_path / "subuid"
    path.write_text("root:100000:10000001\n")
    plan = plan_subid("subuid", path, start=200000, count=10000)
    assert plan.clash == SubidRange("root", 100000, 10000001)
    assert plan.added == []
    assert plan.new_text == "root:100000:10000001\n"


def test_only_the_missing_parts_are_added() -> None:
    ranges = [SubidRange("root", 200000, 1000), SubidRange("root", 205000, 1000)]
    assert missing_ranges(ranges, owner="root", start=200000, count=10000) == [
        SubidRange("root", 201000, 4000),
        SubidRange("root", 206000, 4000),
    ]


def test_root_may_be_named_by_uid_but_other_users_do_not_count() -> None:
    assert missing_ranges([SubidRange("0", 200000, 10000)], owner="root", start=200000, count=10000) == []
    other = [SubidRange("alice", 200000, 10000)]
    assert missing_ranges(other, owner="root", start=200000, count=10000) == [
        SubidRange("root", 200000, 10000)
    ]


def test_adding_twice_adds_once() -> None:
    once, _ = add_subid_range("", owner="root", start=200000, count=10000)
    twice, added = add_subid_range(once, owner="root", start=200000, count=10000)
    assert once == "root:200000:10000\n"
    assert twice == once
    assert added == []


def test_plan_reads_a_missing_file_as_empty(tmp_path: Path) -> None:
    plan = plan_subid("subuid", tmp_path / "subuid", start=200000, count=10000)
    assert plan.new_text == "root:200000:10000\n"


def test_the_writer_replaces_the_file_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "subuid"
    path.write_text(DEBIAN)
    path.chmod(0o640)
    write_file_atomically(path, DEBIAN + "root:200000:10000\n")
    assert path.read_text() == DEBIAN + "root:200000:10000\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["subuid"]  # no temporary file left behind


def test_the_writer_makes_a_new_file_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "subgid"
    write_file_atomically(path, "root:200000:10000\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# Kernel limits ---------------------------------------------------------------------------------------


def _kernel_run(tmp_path: Path, *, dry_run: bool = False) -> tuple[Any, HostPaths]:
    from labgpu.services.hosts._setup import HostInitReport, _Run

    report = HostInitReport(runtime="test", dry_run=dry_run, force=False)
    run = _Run(None, Settings(state_dir=tmp_path / "state"), None, report, force=False, dry_run=dry_run)  # type: ignore[arg-type]
    return run, HostPaths(sysctl_root=tmp_path / "sys")


def test_kernel_limits_are_raised_now_and_at_boot_and_never_lowered(tmp_path: Path) -> None:
    from labgpu.services.hosts._setup import _step_kernel_limits

    run, paths = _kernel_run(tmp_path)
    fake_sysctl(tmp_path / "sys", {**DEBIAN_SYSCTL_DEFAULTS, "fs/inotify/max_user_watches": 4194304})
    _step_kernel_limits(run, paths)
    [step] = run.report.steps
    assert step.status == StepStatus.CHANGED
    assert "fs.inotify.max_user_instances: 128 -> 1048576" in step.diff
    assert (paths.proc_sys / "fs/inotify/max_user_instances").read_text() == "1048576\n"
    assert (paths.proc_sys / "fs/inotify/max_user_watches").read_text() == "4194304\n"  # higher: kept
    conf = paths.sysctl_conf.read_text()
    assert "fs.inotify.max_user_watches = 4194304" in conf  # not lowered at the next boot either
    assert "vm.max_map_count = 262144" in conf
    again, _ = _kernel_run(tmp_path)
    _step_kernel_limits(again, paths)
    assert [s.status for s in again.report.steps] == [StepStatus.UNCHANGED]


def test_kernel_limits_dry_run_changes_nothing_and_an_unwritable_proc_needs_attention(tmp_path: Path) -> None:
    from labgpu.services.hosts._setup import _step_kernel_limits

    fake_sysctl(tmp_path / "sys")
    run, paths = _kernel_run(tmp_path, dry_run=True)
    _step_kernel_limits(run, paths)
    assert [s.status for s in run.report.steps] == [StepStatus.WOULD_CHANGE]
    assert (paths.proc_sys / "vm/max_map_count").read_text() == "65530\n"
    assert not paths.sysctl_conf.exists()

    # etc/sysctl.d is a file: the write fails (as on a read-only /etc), even for root.
    paths.sysctl_conf.parent.parent.mkdir(parents=True)
    paths.sysctl_conf.parent.write_text("")
    run, paths = _kernel_run(tmp_path)
    _step_kernel_limits(run, paths)
    [step] = run.report.steps
    assert step.status == StepStatus.NEEDS_ATTENTION
    assert "sysctl -w fs.inotify.max_user_instances=1048576" in step.detail
