"""Package mirrors: what labgpu writes into containers and template builds, and when it leaves a file alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from labgpu.domain import mirrors as m
from labgpu.services.templates._build import lab_mirrors
from labgpu.services.templates._spec_loading import load_spec
from labgpu.settings import Settings

MINIMAL = Path(__file__).resolve().parents[2] / "templates" / "minimal.yaml"


def settings(**kw: object) -> Settings:
    return Settings(state_dir="/tmp/labgpu-unit", **kw)  # type: ignore[arg-type]


def test_presets_and_urls_are_taken_anything_else_is_refused_naming_the_setting() -> None:
    s = settings(apt_mirror="tuna", pip_index_url="https://pypi.example.edu/simple/", conda_mirror="")
    want = m.Mirrors.from_settings(s.apt_mirror, s.pip_index_url, s.conda_mirror)
    assert want == m.Mirrors("https://mirrors.tuna.tsinghua.edu.cn", "https://pypi.example.edu/simple", None)
    assert [h[:2] for h in want.hosts] == [
        ("apt", "mirrors.tuna.tsinghua.edu.cn"),
        ("pip", "pypi.example.edu"),
    ]
    for bad in (
        "ftp://mirror.example.edu",
        "tsinghua",
        "http://x y",
        "https://m.example.edu/?a=1",
        "'; rm -rf /",
    ):
        with pytest.raises(ValidationError, match="apt_mirror"):
            settings(apt_mirror=bad)


def test_apt_sources_follow_the_distribution() -> None:
    debian = m.apt_sources("http://10.0.0.1:8080", family="debian", codename="bookworm")
    assert debian is not None and debian.splitlines()[0] == m.MARKER
    assert "deb http://10.0.0.1:8080/debian bookworm main contrib non-free non-free-firmware" in debian
    assert "deb http://10.0.0.1:8080/debian-security bookworm-security" in debian
    ubuntu = m.apt_sources("https://mirrors.ustc.edu.cn", family="ubuntu", codename="jammy")
    assert (
        ubuntu is not None
        and "deb https://mirrors.ustc.edu.cn/ubuntu jammy-updates main restricted" in ubuntu
    )
    official = m.apt_sources(None, family="debian", codename="bookworm")
    assert official is not None and "http://deb.debian.org/debian bookworm" in official
    assert m.apt_sources("http://x", family="rocky", codename="") is None  # not apt: left alone
    assert m.apt_sources("http://x", family="debian", codename="a b") is None
    assert m.os_family("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\nUBUNTU_CODENAME=noble\n") == (
        "ubuntu",
        "noble",
    )
    assert m.os_family('ID=linuxmint\nID_LIKE="ubuntu debian"\nUBUNTU_CODENAME=jammy\n') == (
        "ubuntu",
        "jammy",
    )
    assert m.os_family("ID=debian\nVERSION_CODENAME=bookworm\n") == ("debian", "bookworm")


def test_pip_and_conda_files() -> None:
    assert m.pip_conf(None) is None and m.condarc(None) is None
    pip = m.pip_conf("http://10.0.0.1:3141/simple")
    assert pip == f"{m.MARKER}\n[global]\nindex-url = http://10.0.0.1:3141/simple\ntrusted-host = 10.0.0.1\n"
    assert "trusted-host" not in (m.pip_conf("https://pypi.tuna.tsinghua.edu.cn/simple") or "")
    conda = m.condarc("https://mirrors.tuna.tsinghua.edu.cn/anaconda") or ""
    assert "  - https://mirrors.tuna.tsinghua.edu.cn/anaconda/pkgs/main" in conda
    assert "conda-forge: https://mirrors.tuna.tsinghua.edu.cn/anaconda/cloud" in conda


def test_a_file_without_the_marker_is_the_members_own() -> None:
    assert m.should_write(None, new_container=False)  # missing: labgpu may write it
    assert m.should_write(f"{m.MARKER}\n[global]\n", new_container=False)
    assert not m.should_write("[global]\nindex-url = https://my.own/simple\n", new_container=False)
    assert m.should_write(
        "deb http://deb.debian.org/debian bookworm main\n", new_container=True
    )  # the image's


def test_template_builds_take_the_labs_mirrors_where_the_spec_names_none() -> None:
    loaded = load_spec(MINIMAL)
    assert lab_mirrors(loaded, settings()) is loaded  # no mirror set: the same spec, the same cache entry
    mirrored = lab_mirrors(loaded, settings(apt_mirror="ustc", pip_index_url="tuna"))
    spec = mirrored.spec
    assert spec.base.debootstrap is not None
    assert spec.base.debootstrap.mirror == "https://mirrors.ustc.edu.cn/debian"
    assert spec.apt.mirror == "https://mirrors.ustc.edu.cn/debian"
    assert spec.environment["PIP_INDEX_URL"] == "https://pypi.tuna.tsinghua.edu.cn/simple"
    assert mirrored.spec_hash() != loaded.spec_hash()
