"""`labgpu agent`: token auth, what it refuses to expose, /v1/gpus and Prometheus /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from labgpu.errors import ConfigError
from labgpu.gpu.agent import SharedSweep, check_exposure, create_agent_app, is_loopback
from labgpu.gpu.fake import RecordedNvml, load_scenario, write_proc_tree
from labgpu.gpu.inventory import Inventory, take_inventory
from labgpu.settings import load_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
TOKEN = "t" * 40


@pytest.fixture
def sweep(tmp_path: Path):  # type: ignore[no-untyped-def]
    source, procs = load_scenario(FIXTURES / "nvml" / "four-gpus.json")
    write_proc_tree(tmp_path, procs)
    container = procs[41001][0].split("lxc.payload.")[1].split("/")[0].strip()
    owners = {("default", container): "alice"}
    return lambda: take_inventory(source, owners=owners, proc_root=tmp_path)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_token_is_required_and_checked(sweep) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(create_agent_app(sweep=sweep, token=TOKEN))
    for path in ("/v1/gpus", "/metrics"):
        r = client.get(path)
        assert r.status_code == 401 and r.json()["reason"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/healthz").text == "ok"
    assert client.get("/nothing").json()["reason"] == "not-found"


def test_gpus_endpoint_serves_the_inventory(sweep) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(create_agent_app(sweep=sweep, token=TOKEN))
    data = client.get("/v1/gpus", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert data["available"] is True and len(data["gpus"]) == 4
    first = data["gpus"][0]["processes"][0]
    assert first["member"] == "alice" and first["where"] == "container"


def test_metrics_per_gpu_and_per_member(sweep) -> None:  # type: ignore[no-untyped-def]
    client = TestClient(create_agent_app(sweep=sweep, token=None))
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    m = samples(r.text)
    util = {lab["gpu"]: v for lab, v in m["labgpu_gpu_utilization_percent"]}
    assert util == {"0": 97.0, "1": 3.0, "2": 0.0, "3": 58.0}
    (labels, total), *_ = m["labgpu_gpu_memory_total_bytes"]
    assert labels["uuid"].startswith("GPU-") and labels["name"] == "NVIDIA RTX A6000" and total == 51527024640
    for name in ("labgpu_gpu_memory_used_bytes", "labgpu_gpu_temperature_celsius", "labgpu_gpu_power_watts"):
        assert len(m[name]) == 4
    member = [(lab, v) for lab, v in m["labgpu_member_gpu_memory_used_bytes"] if lab["member"] == "alice"]
    assert member == [
        (
            {
                "gpu": "0",
                "uuid": member[0][0]["uuid"],
                "name": "NVIDIA RTX A6000",
                "member": "alice",
                "container": member[0][0]["container"],
                "where": "container",
            },
            30500.0 * 2**20,
        )
    ]
    host = [lab for lab, _ in m["labgpu_member_gpu_processes"] if lab["where"] == "host"]
    assert host and host[0]["member"] == "" and host[0]["container"] == ""
    assert m["labgpu_nvml_up"] == [({}, 1.0)]


def test_metrics_without_a_gpu() -> None:
    app = create_agent_app(sweep=lambda: take_inventory(RecordedNvml(unavailable="no driver")), token=None)
    client = TestClient(app)
    m = samples(client.get("/metrics").text)
    assert m["labgpu_nvml_up"] == [({}, 0.0)]
    assert "labgpu_gpu_utilization_percent" not in m
    assert client.get("/v1/gpus").json()["reason"].startswith("no NVIDIA GPU on this host")


def test_no_token_only_on_loopback() -> None:
    check_exposure("127.0.0.1", None)
    check_exposure("::1", None)
    check_exposure("localhost", None)
    check_exposure("0.0.0.0", TOKEN)
    for host in ("0.0.0.0", "10.1.2.3", "::", "gpu1.lab.example"):
        with pytest.raises(ConfigError, match="agent_token"):
            check_exposure(host, None)
    assert is_loopback("127.0.0.2") and not is_loopback("192.168.1.1")


def test_agent_token_setting_refuses_weak_values() -> None:
    with pytest.raises(ConfigError, match="agent_token"):
        load_settings(agent_token="change-me")
    with pytest.raises(ConfigError, match="agent_token"):
        load_settings(agent_token="short")
    assert load_settings(agent_token=TOKEN).agent_token is not None
    assert load_settings(agent_token="short", development=True).agent_token is not None


def test_shared_sweep_runs_at_most_once_per_interval() -> None:
    calls: list[int] = []
    now = [100.0]

    def one() -> Inventory:
        calls.append(1)
        return Inventory(available=False, reason="x")

    shared = SharedSweep(one, min_interval=1.0, clock=lambda: now[0])
    shared()
    shared()
    assert len(calls) == 1
    now[0] += 1.5
    shared()
    assert len(calls) == 2
