"""The portal's health endpoint, in process, against a real store and daemon."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from labgpu.settings import load_settings
from labgpu.store.migrate import upgrade
from labgpu.web.app import create_app


@pytest.mark.integration
def test_healthz_reports_store_and_daemon(tmp_path: Path, runtime, daemon_kind: str) -> None:
    sock = runtime.endpoint.socket_path
    settings = load_settings(state_dir=tmp_path, runtime_url=f"unix://{sock}")
    upgrade(settings)
    with TestClient(create_app(settings)) as client:
        r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["checks"]["runtime"]["kind"] == daemon_kind


def test_healthz_is_503_with_a_reason_when_the_daemon_is_down(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, runtime_url=f"unix://{tmp_path}/missing.sock")
    upgrade(settings)
    with TestClient(create_app(settings)) as client:
        r = client.get("/healthz")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["runtime"]["ok"] is False
    assert "missing.sock" in body["checks"]["runtime"]["detail"]
