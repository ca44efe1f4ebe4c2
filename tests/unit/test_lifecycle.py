"""Pure parts of member set / reset / rm and snapshots: what a patch removes, option parsing,
snapshot names and rotation, archive folder names."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from labgpu.errors import BadInput
from labgpu.services.members._apply import desired_patch
from labgpu.services.members._lifecycle import archive_path
from labgpu.services.members._set import parse_set_request
from labgpu.services.members._snapshots import (
    SnapshotInfo,
    automatic_name,
    is_automatic,
    oldest_first,
    to_prune,
    validate_snapshot_name,
)

HOME = {"type": "disk", "source": "/srv/labgpu/home/ann", "path": "/home/ubuntu/ann"}
SSH = {"type": "proxy", "listen": "tcp:0.0.0.0:22000", "connect": "tcp:127.0.0.1:22", "bind": "host"}


def test_patch_changes_only_what_differs() -> None:
    config, devices = desired_patch(
        {"limits.memory": "8GiB", "boot.autostart": "true"},
        {"labgpu-home": HOME, "labgpu-ssh": SSH},
        {"limits.memory": "4GiB", "boot.autostart": "true", "volatile.x": "1"},
        {"labgpu-home": HOME, "labgpu-ssh": SSH},
    )
    assert config == {"limits.memory": "8GiB"}
    assert devices == {}


def test_patch_removes_labgpus_own_stale_keys_and_devices_but_nothing_else() -> None:
    config, devices = desired_patch(
        {},
        {"labgpu-home": HOME},
        {"limits.cpu": "2", "limits.memory": "4GiB", "user.note": "admin's", "security.nesting": "false"},
        {
            "labgpu-home": HOME,
            "labgpu-rdp": SSH,
            "share-cuda": {"type": "disk", "source": "/opt/cuda", "path": "/usr/local/cuda"},
            "eth0": {"type": "nic", "network": "lxdbr0"},
            "root": {"type": "disk", "path": "/", "pool": "default"},
        },
    )
    assert config == {"limits.cpu": None, "limits.memory": None}
    # The admin's NIC and a root disk without a size (not labgpu's) stay.
    assert devices == {"labgpu-rdp": None, "share-cuda": None}


def test_patch_removes_a_sized_root_disk_when_the_size_goes_back_to_default() -> None:
    _, devices = desired_patch(
        {}, {}, {}, {"root": {"type": "disk", "path": "/", "pool": "default", "size": "50GiB"}}
    )
    assert devices == {"root": None}


def test_set_request_parses_limits_and_none_clears_them() -> None:
    req = parse_set_request(cpu="4", memory="8GiB", disk="none", gpus="1,0", rdp=True, vnc=False)
    assert req.given == {"cpu", "memory", "disk", "gpus"}
    assert (req.cpu, req.memory_bytes, req.disk_bytes, req.gpus) == (4, 8 * 1024**3, None, "0,1")
    assert req.ports == {"rdp": True, "vnc": False}
    cleared = parse_set_request(cpu="none", memory="default")
    assert cleared.given == {"cpu", "memory"} and cleared.cpu is None and cleared.memory_bytes is None
    assert parse_set_request().empty


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cpu": "two"},
        {"cpu": "0"},
        {"cpu": "-1"},
        {"memory": "lots"},
        {"disk": "0GiB"},
        {"gpus": "first"},
        {"add_shares": ["data"], "remove_shares": ["data"]},
    ],
)
def test_set_request_refuses_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(BadInput):
        parse_set_request(**kwargs)  # type: ignore[arg-type]


def test_automatic_snapshot_names_are_utc_and_unique() -> None:
    now = datetime(2026, 1, 22, 15, 30, 5, tzinfo=UTC)
    assert automatic_name(now, set()) == "snap-20260122-153005"
    assert automatic_name(now, {"snap-20260122-153005"}) == "snap-20260122-153005-2"
    assert automatic_name(now, {"snap-20260122-153005", "snap-20260122-153005-2"}) == "snap-20260122-153005-3"
    assert is_automatic("snap-20260122-153005-3")
    assert not is_automatic("before-cuda-upgrade")
    assert not is_automatic("snap-2026")


def _snap(name: str, at: str) -> SnapshotInfo:
    return SnapshotInfo(name=name, created_at=at, automatic=is_automatic(name))


def test_pruning_deletes_the_oldest_automatic_snapshots_only() -> None:
    snaps = [
        _snap("snap-20260101-000003", "2026-01-01T00:00:03.5Z"),
        _snap("before-upgrade", "2026-01-01T00:00:00Z"),
        _snap("snap-20260101-000001", "2026-01-01T00:00:01.429485431Z"),
        # Fewer fraction digits, but later: plain string order would put it first.
        _snap("snap-20260101-000001-2", "2026-01-01T00:00:01.43Z"),
    ]
    assert [s.name for s in oldest_first(snaps)] == [
        "before-upgrade",
        "snap-20260101-000001",
        "snap-20260101-000001-2",
        "snap-20260101-000003",
    ]
    assert to_prune(snaps, keep=2) == ["snap-20260101-000001"]
    assert to_prune(snaps, keep=1) == ["snap-20260101-000001", "snap-20260101-000001-2"]
    assert to_prune(snaps, keep=3) == []
    assert to_prune(snaps, keep=0) == []  # 0: never delete automatically


@pytest.mark.parametrize("name", ["", "a/b", "-x", "with space", "x" * 64, "über"])
def test_snapshot_names_are_checked(name: str) -> None:
    with pytest.raises(BadInput):
        validate_snapshot_name(name)


def test_archive_folder_names_never_collide(tmp_path: Path) -> None:
    now = datetime(2026, 1, 22, 15, 30, 5, tzinfo=UTC)
    first = archive_path(tmp_path, "ann", now)
    assert first == tmp_path / "ann-20260122T153005Z"
    first.mkdir()
    second = archive_path(tmp_path, "ann", now)
    assert second == tmp_path / "ann-20260122T153005Z-2"
    (tmp_path / "ann-20260122T153005Z-2.partial").mkdir()  # an interrupted copy still holds the name
    assert archive_path(tmp_path, "ann", now) == tmp_path / "ann-20260122T153005Z-3"
