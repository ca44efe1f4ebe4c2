"""The pure parts of the offline image builder: recipes, their hash, metadata, user edits, the cache."""

from __future__ import annotations

import fcntl
import struct
from pathlib import Path

import pytest
import yaml

from labgpu.errors import BadInput
from labgpu.system import base_image, rootfs
from labgpu.system.base_image import (
    ImageBuildError,
    add_user,
    build_image,
    busybox_recipe,
    cached_image,
    debootstrap_recipe,
    host_architecture,
    image_metadata,
    is_static_elf,
    prune_cache,
    recipe_hash,
    resolve_cache_dir,
)


def fake_elf(*, interpreter: bool, marker: bytes = b"BusyBox v1.36.1 (fake)") -> bytes:
    """A minimal 64-bit ELF image: one PT_LOAD header, plus PT_INTERP when dynamic."""
    types = [1, 3] if interpreter else [1]
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[32:40] = struct.pack("<Q", 64)  # e_phoff
    header[54:56] = struct.pack("<H", 56)  # e_phentsize
    header[56:58] = struct.pack("<H", len(types))  # e_phnum
    program_headers = b"".join(struct.pack("<I", t) + bytes(52) for t in types)
    return bytes(header) + program_headers + marker


@pytest.fixture
def fake_busybox(tmp_path: Path) -> Path:
    path = tmp_path / "busybox"
    path.write_bytes(fake_elf(interpreter=False))
    return path


# Recipes and their hash ---------------------------------------------------------------------------


def test_same_inputs_give_the_same_hash() -> None:
    a = debootstrap_recipe(architecture="x86_64")
    b = debootstrap_recipe(architecture="x86_64")
    assert a == b
    assert recipe_hash(a) == recipe_hash(b)
    assert len(recipe_hash(a)) == 32


def test_package_order_and_duplicates_do_not_change_the_hash() -> None:
    a = debootstrap_recipe(include=["sudo", "openssh-server"], architecture="x86_64")
    b = debootstrap_recipe(include=["openssh-server", "sudo", "sudo"], architecture="x86_64")
    assert recipe_hash(a) == recipe_hash(b)


@pytest.mark.parametrize(
    "change",
    [
        {"suite": "trixie"},
        {"mirror": "http://mirrors.tuna.tsinghua.edu.cn/debian"},
        {"include": ["openssh-server", "sudo", "vim"]},
        {"user": "student"},
        {"uid": 1001},
        {"architecture": "aarch64"},
    ],
)
def test_every_input_changes_the_hash(change: dict[str, object]) -> None:
    base = {"architecture": "x86_64"}
    assert recipe_hash(debootstrap_recipe(**{**base, **change})) != recipe_hash(debootstrap_recipe(**base))  # type: ignore[arg-type]


def test_recipe_version_and_builder_code_change_the_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = debootstrap_recipe(architecture="x86_64")
    before = recipe_hash(recipe)
    monkeypatch.setattr(base_image, "RECIPE_VERSION", base_image.RECIPE_VERSION + 1)
    after_version = recipe_hash(recipe)
    monkeypatch.setattr(rootfs, "SSHD_CONFIG", rootfs.SSHD_CONFIG + "PermitRootLogin yes\n")
    after_code = recipe_hash(recipe)
    assert len({before, after_version, after_code}) == 3


def test_busybox_text_does_not_invalidate_the_ssh_image(monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = debootstrap_recipe(architecture="x86_64")
    before = recipe_hash(recipe)
    monkeypatch.setattr(rootfs, "BUSYBOX_INITTAB", "::sysinit:/bin/true\n")
    assert recipe_hash(recipe) == before


def test_busybox_recipe_reads_version_and_digest(tmp_path: Path, fake_busybox: Path) -> None:
    recipe = busybox_recipe(busybox=fake_busybox, architecture="x86_64")
    assert recipe.kind == "busybox"
    assert recipe.busybox_version == "1.36.1"
    other = tmp_path / "other-busybox"
    other.write_bytes(fake_elf(interpreter=False, marker=b"BusyBox v1.36.1 (rebuilt)"))
    assert recipe_hash(busybox_recipe(busybox=other, architecture="x86_64")) != recipe_hash(recipe)


def test_a_dynamic_or_missing_busybox_is_refused_with_the_package_to_install(tmp_path: Path) -> None:
    dynamic = tmp_path / "busybox"
    dynamic.write_bytes(fake_elf(interpreter=True))
    with pytest.raises(ImageBuildError, match="not a static binary") as excinfo:
        busybox_recipe(busybox=dynamic)
    assert "apt-get install busybox-static" in (excinfo.value.hint or "")
    with pytest.raises(ImageBuildError, match="does not exist") as excinfo:
        busybox_recipe(busybox=tmp_path / "missing")
    assert "busybox-static" in (excinfo.value.hint or "")


def test_is_static_elf() -> None:
    assert is_static_elf(fake_elf(interpreter=False))
    assert not is_static_elf(fake_elf(interpreter=True))
    assert not is_static_elf(b"#!/bin/sh\necho hi\n" + bytes(64))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"suite": "bookworm; rm -rf /"},
        {"suite": ""},
        {"mirror": "ftp://ftp.debian.org/debian"},
        {"mirror": "http://host/debian $(reboot)"},
        {"include": ["openssh-server", "--foreign"]},
        {"include": ["Not A Package"]},
        {"user": "Root!"},
        {"uid": 0},
    ],
)
def test_bad_recipe_inputs_are_bad_input(kwargs: dict[str, object]) -> None:
    with pytest.raises(BadInput):
        debootstrap_recipe(architecture="x86_64", **kwargs)  # type: ignore[arg-type]


def test_host_architecture_uses_lxd_names() -> None:
    assert host_architecture("x86_64") == "x86_64"
    assert host_architecture("amd64") == "x86_64"
    assert host_architecture("arm64") == "aarch64"
    with pytest.raises(ImageBuildError, match="unsupported architecture"):
        host_architecture("pdp11")


# Metadata -----------------------------------------------------------------------------------------


def test_metadata_names_the_image_and_renders_hostname_and_hosts() -> None:
    recipe = debootstrap_recipe(suite="bookworm", architecture="x86_64")
    meta = image_metadata(recipe, recipe_hash="abc123", creation_date=1_700_000_000)
    assert meta["architecture"] == "x86_64"
    assert meta["creation_date"] == 1_700_000_000
    assert meta["properties"]["os"] == "debian"
    assert meta["properties"]["release"] == "bookworm"
    assert meta["properties"]["labgpu.recipe"] == "abc123"
    assert "bookworm" in meta["properties"]["description"]
    templates = meta["templates"]
    assert templates["/etc/hostname"] == {"when": ["create", "copy"], "template": "hostname.tpl"}
    assert templates["/etc/hosts"]["template"] == "hosts.tpl"
    assert "{{ container.name }}" in base_image.HOSTNAME_TEMPLATE
    assert "127.0.1.1\t{{ container.name }}" in base_image.HOSTS_TEMPLATE
    # Plain YAML (no anchors) that any parser reads back the same.
    text = yaml.safe_dump(meta)
    assert "&id" not in text
    assert yaml.safe_load(text) == meta


def test_busybox_metadata(fake_busybox: Path) -> None:
    recipe = busybox_recipe(busybox=fake_busybox, architecture="x86_64")
    props = image_metadata(recipe, recipe_hash="h", creation_date=1)["properties"]
    assert (props["os"], props["release"]) == ("busybox", "1.36.1")


# The login user -----------------------------------------------------------------------------------


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/nonexistent:/bin/false\n"
    )
    (etc / "group").write_text("root:x:0:\nsudo:x:27:\nusers:x:100:alice\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\nsudo:*::\nusers:*::alice\n")
    (etc / "shadow").chmod(0o640)
    return etc


def test_add_user_writes_all_four_files(etc: Path) -> None:
    add_user(etc, name="ubuntu", uid=1000, groups=("sudo", "users"), days_since_epoch=20000)
    assert "ubuntu:x:1000:1000::/home/ubuntu:/bin/bash" in (etc / "passwd").read_text().splitlines()
    group = (etc / "group").read_text().splitlines()
    assert "ubuntu:x:1000:" in group
    assert "sudo:x:27:ubuntu" in group
    assert "users:x:100:alice,ubuntu" in group
    gshadow = (etc / "gshadow").read_text().splitlines()
    assert "sudo:*::ubuntu" in gshadow
    assert "ubuntu:!::" in gshadow
    # Locked until labgpu sets a password; not expired, so key-only logins work.
    assert "ubuntu:!:20000:0:99999:7:::" in (etc / "shadow").read_text().splitlines()
    assert (etc / "shadow").stat().st_mode & 0o777 == 0o640


def test_add_user_refuses_a_taken_name_or_uid_and_a_missing_group(etc: Path) -> None:
    with pytest.raises(ImageBuildError, match="already exists"):
        add_user(etc, name="root", uid=1000, days_since_epoch=1)
    with pytest.raises(ImageBuildError, match="already exists"):
        add_user(etc, name="ubuntu", uid=65534, days_since_epoch=1)
    with pytest.raises(ImageBuildError, match="group wheel does not exist"):
        add_user(etc, name="ubuntu", uid=1000, groups=("wheel",), days_since_epoch=1)


# The cache ----------------------------------------------------------------------------------------


def test_cache_dir_comes_from_the_argument_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LABGPU_IMAGE_CACHE", raising=False)
    assert resolve_cache_dir() == Path("/var/cache/labgpu/images")
    monkeypatch.setenv("LABGPU_IMAGE_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_a_cached_entry_is_returned_without_building(tmp_path: Path, fake_busybox: Path) -> None:
    recipe = busybox_recipe(busybox=fake_busybox, architecture="x86_64")
    assert cached_image(recipe, cache_dir=tmp_path) is None
    entry = tmp_path / recipe_hash(recipe)
    entry.mkdir()
    (entry / "meta.tar.gz").write_bytes(b"meta")
    (entry / "rootfs.tar.gz").write_bytes(b"rootfs")
    # The fake busybox cannot run, so this would fail if it tried to build.
    image = build_image(recipe, cache_dir=tmp_path)
    assert image.cached
    assert image.meta == entry / "meta.tar.gz"
    assert image.rootfs == entry / "rootfs.tar.gz"
    assert image.recipe_hash == recipe_hash(recipe)


def test_a_failed_build_leaves_no_cache_entry_and_no_build_folder(tmp_path: Path, fake_busybox: Path) -> None:
    recipe = busybox_recipe(busybox=fake_busybox, architecture="x86_64")
    with pytest.raises(ImageBuildError, match="cannot run"):
        build_image(recipe, cache_dir=tmp_path)  # the fake binary cannot be executed
    assert cached_image(recipe, cache_dir=tmp_path) is None
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_prune_deletes_only_old_entries_that_nobody_is_building(tmp_path: Path) -> None:
    keep, old, busy = "a" * 32, "b" * 32, "c" * 32
    for name in (keep, old, busy, "not-a-cache-entry"):
        (tmp_path / name).mkdir()
    with (tmp_path / f".{busy}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build of this recipe is under way
        assert prune_cache(keep={keep}, cache_dir=tmp_path) == [old]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted(
        [keep, busy, "not-a-cache-entry"]
    )
