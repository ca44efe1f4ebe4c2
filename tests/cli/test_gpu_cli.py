"""`labgpu gpu list` / `gpu top`: the real CLI on this host (no GPU here) and over recorded data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labgpu.cli.main import run
from labgpu.gpu.fake import load_scenario, write_proc_tree
from labgpu.gpu.nvml import probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], capture_output=True, text=True, timeout=120, env=env)


needs_no_gpu = pytest.mark.skipif(probe().ok, reason="this host has a working NVIDIA GPU")


@needs_no_gpu
def test_list_without_a_gpu_says_so_and_succeeds() -> None:
    r = labgpu("gpu", "list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("no NVIDIA GPU on this host (") and "Traceback" not in r.stderr
    assert len(r.stdout.strip().splitlines()) == 1


@needs_no_gpu
def test_list_json_without_a_gpu_is_an_empty_list_and_the_reason_on_stderr() -> None:
    r = labgpu("gpu", "list", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == []
    assert r.stderr.startswith("no NVIDIA GPU on this host (")


@needs_no_gpu
def test_top_once_without_a_gpu() -> None:
    r = labgpu("gpu", "top", "--once")
    assert r.returncode == 0 and r.stdout.startswith("no NVIDIA GPU on this host")


@needs_no_gpu
def test_record_without_a_gpu_fails_clearly(tmp_path: Path) -> None:
    r = labgpu("gpu", "record", str(tmp_path / "r.json"))
    assert r.returncode == 1 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


@pytest.fixture
def replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    source, procs = load_scenario(FIXTURES / "nvml" / "four-gpus.json")
    proc = write_proc_tree(tmp_path / "proc", procs)
    recording = tmp_path / "four.json"
    recording.write_text(json.dumps(source.reading.to_json()))  # type: ignore[union-attr]
    # No daemon: members are unknown, and the CLI says why instead of failing.
    monkeypatch.setenv("LABGPU_RUNTIME_URL", f"unix://{tmp_path}/no-daemon.socket")
    monkeypatch.setenv("COLUMNS", "200")
    return recording, proc


def test_list_over_recorded_data(replay: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    recording, proc = replay
    assert run(["gpu", "list", "--replay", str(recording), "--proc-root", str(proc)]) == 0
    out, err = capsys.readouterr()
    assert "NVIDIA RTX A6000" in out and "0000:1b:00.0" in out and "41.0 GiB / 48.0 GiB" in out
    assert "41001" in out and "cap-sd-" in out and "host" in out and "Xorg" in out
    assert "members unknown" in err


def test_list_json_over_recorded_data(replay: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    recording, proc = replay
    assert run(["gpu", "list", "--json", "--replay", str(recording), "--proc-root", str(proc)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["index"] for g in data] == [0, 1, 2, 3]
    where = {p["pid"]: p["where"] for g in data for p in g["processes"]}
    assert where == {
        41001: "container",
        41002: "container",
        41003: "container",
        41004: "host",
        41005: "unknown",
        41006: "container",
    }


def test_top_once_over_recorded_data(replay: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    recording, proc = replay
    assert run(["gpu", "top", "--once", "--replay", str(recording), "--proc-root", str(proc)]) == 0
    out = capsys.readouterr().out
    assert "labgpu gpu top" in out and "97%" in out and "41003 jupyter-lab" in out and "idle" in out


def test_agent_refuses_a_public_address_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
    env["LABGPU_STATE_DIR"] = str(tmp_path)
    r = labgpu("agent", "--host", "0.0.0.0", env=env)
    assert r.returncode == 2 and "agent_token" in r.stderr and "Traceback" not in r.stderr


def test_agent_serves_gpus_and_metrics_with_a_token(replay: tuple[Path, Path], tmp_path: Path) -> None:
    import socket
    import time

    import httpx

    recording, _ = replay
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "k" * 40
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
    env.update(
        LABGPU_STATE_DIR=str(tmp_path),
        LABGPU_AGENT_TOKEN=token,
        LABGPU_RUNTIME_URL=f"unix://{tmp_path}/no-daemon.socket",
    )
    proc = subprocess.Popen(
        [*LABGPU, "agent", "--host", "127.0.0.1", "--port", str(port), "--replay", str(recording)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"{base}/v1/gpus").status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        data = httpx.get(f"{base}/v1/gpus", headers=auth).json()
        assert data["available"] and len(data["gpus"]) == 4
        assert any("members unknown" in w for w in data["warnings"])
        metrics = httpx.get(f"{base}/metrics", headers=auth).text
        assert 'labgpu_gpu_utilization_percent{gpu="0"' in metrics
    finally:
        proc.terminate()
        proc.wait(timeout=10)
