"""`labgpu host init` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labgpu.cli.main import run
from labgpu.runtime.client import RuntimeClient
from tests.conftest import Cleanup, fake_sysctl, unique_name


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL", "LABGPU_RUNTIME_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABGPU_STATE_DIR", str(tmp_path / "state"))


def test_unreachable_daemon_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABGPU_RUNTIME_URL", "unix:///nonexistent.sock")
    code = run(["host", "init"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "/nonexistent.sock" in lines[0]
    assert "start the daemon" in lines[0]
    assert "Traceback" not in err


@pytest.fixture
def host_env(
    runtime: RuntimeClient, cleanup: Cleanup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> list[str]:
    """Environment for a host init on unique objects; returns the subuid/subgid options."""
    monkeypatch.setenv("LABGPU_RUNTIME_URL", f"unix://{runtime.endpoint.describe()}")
    monkeypatch.setenv("LABGPU_STORAGE_POOL", cleanup.pool(unique_name("lgp")))
    monkeypatch.setenv("LABGPU_STORAGE_DRIVER", "dir")
    # The default network (a bridge), on a name of its own; without NAT: tests send nothing off the machine.
    # (Registered before the profile that uses it: cleanup deletes in reverse order.)
    monkeypatch.setenv("LABGPU_NETWORK_NAME", cleanup.network(unique_name("lgn")))
    monkeypatch.setenv("LABGPU_PROFILE_NAME", cleanup.profile(unique_name("lgf")))
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text("root:100000:65536\n")
    fake_sysctl(tmp_path / "sysctl")  # the machine's own kernel limits are not the tests' to change
    return [
        "--subuid-file", str(tmp_path / "subuid"), "--subgid-file", str(tmp_path / "subgid"),
        "--sysctl-root", str(tmp_path / "sysctl"), "--no-nat",
    ]  # fmt: skip


@pytest.mark.integration
def test_init_twice_then_nothing_to_change(
    runtime: RuntimeClient, host_env: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["host", "init", *host_env]) == 0
    out = capsys.readouterr().out
    assert (
        f"Host init on {runtime.server().label} {runtime.server().version} at {runtime.endpoint.describe()}"
        in out
    )
    assert "created" in out
    assert "restart the daemon" in out

    assert run(["host", "init", *host_env]) == 0
    out = capsys.readouterr().out
    assert "nothing to change" in out
    assert "created" not in out


@pytest.mark.integration
def test_dry_run_and_json(
    runtime: RuntimeClient, host_env: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["host", "init", "--dry-run", *host_env]) == 0
    out = capsys.readouterr().out
    assert "would-create" in out
    assert "dry run: nothing was changed" in out

    assert run(["host", "init", "--dry-run", "--json", *host_env]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True
    assert report["runtime"].endswith(runtime.endpoint.describe())
    steps = {s["step"]: s["status"] for s in report["steps"]}
    assert steps == {
        "storage pool": "would-create",
        "network": "would-create",  # the default: a bridge
        "profile": "would-create",
        "subuid": "would-create",
        "subgid": "would-create",
        "kernel limits": "would-change",
    }


@pytest.mark.integration
def test_bad_macvlan_parent_is_bad_input(
    host_env: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABGPU_NETWORK_MODE", "macvlan")
    monkeypatch.setenv("LABGPU_NETWORK_PARENT", "nosuchnic0")
    assert run(["host", "init", *host_env]) == 2
    err = capsys.readouterr().err
    assert "nosuchnic0" in err
    assert "Traceback" not in err
