"""Fixtures of the GPU portal tests: a served `labgpu agent` and a portal that trusts its token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from labgpu.services.gpus._usage import GpuUsageReader
from labgpu.settings import Settings
from labgpu.web.app import create_app
from tests.web.conftest import Portal
from tests.web.gpus.helpers import AGENT_TOKEN, PortalFactory, ServedAgent, no_nvml, serve_agent


@pytest.fixture
def gpu_agent(tmp_path: Path) -> Iterator[ServedAgent]:
    with serve_agent(tmp_path) as agent:
        yield agent


@pytest.fixture
def gpu_portal(web_settings: Settings, tmp_path: Path) -> Iterator[PortalFactory]:
    """Makes the portal with the agent's token and ``overrides`` of the settings (booking_approval=True,
    ...); ``reader`` replaces the GPU reader (the in-process sweep's source)."""
    clients: list[TestClient] = []

    def make(reader: GpuUsageReader | None = None, **overrides: Any) -> Portal:
        settings = web_settings.model_copy(
            update={"agent_token": SecretStr(AGENT_TOKEN), "jobs_in_serve": False, **overrides}
        )
        app = create_app(settings, gpu_usage=reader or GpuUsageReader(source=no_nvml))
        client = TestClient(app)
        client.__enter__()  # the lifespan: disposes of the engine at the end
        clients.append(client)
        return Portal(app, settings)

    yield make
    for client in clients:
        client.__exit__(None, None, None)
