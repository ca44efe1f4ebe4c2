"""`labgpu doctor` as a person and a script run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labgpu.cli.main import run
from labgpu.runtime.client import RuntimeClient

GPU_CHECKS = ("nvidia-driver", "nvidia-devices", "nvidia-uvm", "nvml", "nvidia-container-cli")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL", "LABGPU_RUNTIME_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABGPU_STATE_DIR", str(tmp_path / "state"))


def test_unreachable_daemon_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABGPU_RUNTIME_URL", "unix:///nonexistent.sock")
    code = run(["doctor"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "/nonexistent.sock" in lines[0]
    assert "start" in lines[0]
    assert "Traceback" not in err


def test_unreachable_daemon_in_json_still_lists_every_check(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABGPU_RUNTIME_URL", "unix:///nonexistent.sock")
    code = run(["doctor", "--json"])
    checks = json.loads(capsys.readouterr().out)
    assert code == 1
    daemon = next(c for c in checks if c["name"] == "daemon")
    assert daemon["status"] == "fail" and daemon["critical"] and not daemon["ok"]
    assert "/nonexistent.sock" in daemon["detail"]


def test_unreachable_daemon_through_the_installed_command(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "labgpu"
    env = {
        "PATH": "/usr/bin:/bin",
        "LABGPU_RUNTIME_URL": "unix:///nonexistent.sock",
        "LABGPU_STATE_DIR": str(tmp_path),
    }
    result = subprocess.run([str(exe), "doctor"], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "/nonexistent.sock" in result.stderr


@pytest.mark.integration
def test_doctor_json_on_this_host(
    runtime: RuntimeClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABGPU_RUNTIME_URL", f"unix://{runtime.endpoint.describe()}")
    monkeypatch.setenv("LABGPU_PROFILE_NAME", "default")
    code = run(["doctor", "--json"])
    checks = json.loads(capsys.readouterr().out)
    assert isinstance(checks, list)
    for check in checks:
        assert set(check) >= {"name", "ok", "detail", "fix", "critical", "status"}
        assert check["status"] in ("ok", "fail", "warn", "n-a")
    by_name = {c["name"]: c for c in checks}
    assert by_name["daemon"]["status"] == "ok"
    if not Path("/proc/driver/nvidia").exists():
        assert all(by_name[n]["status"] in ("n-a", "ok") for n in GPU_CHECKS)
    critical_failed = any(c["critical"] and c["status"] == "fail" for c in checks)
    assert code == (1 if critical_failed else 0)


@pytest.mark.integration
def test_doctor_table_names_the_runtime_and_fixes(
    runtime: RuntimeClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LABGPU_RUNTIME_URL", f"unix://{runtime.endpoint.describe()}")
    monkeypatch.setenv("LABGPU_PROFILE_NAME", "labgpu-no-such-profile")
    monkeypatch.setenv("LABGPU_NETWORK_MODE", "none")  # no bridge here: only the profile is missing
    code = run(["doctor"])
    out = capsys.readouterr().out
    assert code == 1
    assert f"at {runtime.endpoint.describe()}" in out
    assert "profile labgpu-no-such-profile does not exist" in out
    assert "fix: run `labgpu host init`" in out
    assert "critical: profile" in out
