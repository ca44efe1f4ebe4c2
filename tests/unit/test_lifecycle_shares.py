"""Share rules: names, the host folders a share may expose, where it may be mounted."""

from __future__ import annotations

import pytest

from labgpu.domain.shares import check_share_path, check_share_source, validate_share_name
from labgpu.errors import BadInput

PRIVATE = ["/var/lib/labgpu", "/srv/labgpu/home", "/srv/labgpu/archive"]


@pytest.mark.parametrize("name", ["cuda-12.4", "imagenet", "matlab_r2024a", "d", "a1"])
def test_good_share_names(name: str) -> None:
    assert validate_share_name(name) == name


@pytest.mark.parametrize("name", ["", "Data", "has space", "-x", "x-", "a/b", "x" * 41, "ümlaut", "a;b"])
def test_bad_share_names(name: str) -> None:
    with pytest.raises(BadInput):
        validate_share_name(name)


@pytest.mark.parametrize(
    "source", ["/data/imagenet", "/opt/cuda-11.8", "/srv/datasets", "/srv/labgpu/shared"]
)
def test_sources_a_lab_shares(source: str) -> None:
    assert check_share_source(source, real_path=source, private=PRIVATE) == source


@pytest.mark.parametrize(
    "source",
    [
        "/",
        "/etc",
        "/etc/ssl",
        "/root",
        "/var/lib/lxd",
        "/var/lib/incus/storage-pools",
        "/var/lib",  # contains the daemons' storage
        "/var",
        "/srv/labgpu",  # contains every member's home
        "/srv/labgpu/home/ann",
        "/srv/labgpu/archive",
        "/var/lib/labgpu",
        "/proc/1",
        "relative/path",
        "/data/../etc",
    ],
)
def test_sources_never_shared(source: str) -> None:
    with pytest.raises(BadInput):
        check_share_source(source, real_path=source, private=PRIVATE)


def test_a_symbolic_link_cannot_smuggle_in_a_forbidden_folder() -> None:
    with pytest.raises(BadInput, match="never shared"):
        check_share_source("/data/innocent", real_path="/etc", private=PRIVATE)


@pytest.mark.parametrize(
    "path",
    ["/usr/local/cuda-11.8", "/usr/local/cuda-12.4", "/mnt/data", "/opt/matlab", "/data", "/home/shared"],
)
def test_mount_paths_a_lab_uses(path: str) -> None:
    assert check_share_path(path) == path


@pytest.mark.parametrize(
    "path",
    ["/", "/proc", "/proc/x", "/sys/fs", "/dev/shm", "/etc/ssh", "/usr", "/usr/local", "/home", "/home/ubuntu",
     "/tmp", "relative", "/mnt/../etc"],
)  # fmt: skip
def test_mount_paths_refused(path: str) -> None:
    with pytest.raises(BadInput):
        check_share_path(path)
