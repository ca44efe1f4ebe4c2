"""`labgpu host set NAME --agent-url URL`: where the portal reads a host's GPU usage from."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from labgpu.cli.main import run
from labgpu.errors import BadInput
from labgpu.services.hosts._remote import normalize_agent_url
from labgpu.settings import load_settings
from labgpu.store import create_engine_for, session_factory
from labgpu.store.models import AuditEvent, Host, HostKind


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABGPU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LABGPU_RUNTIME_URL", "unix:///nonexistent/labgpu-test.sock")
    assert run(["db", "upgrade"]) == 0
    engine = create_engine_for(load_settings())
    sessions = session_factory(engine)
    with sessions.begin() as session:
        session.add(Host(name="gpu2", url="https://10.0.0.2:8443", kind=HostKind.INCUS))
    yield sessions
    engine.dispose()


def _agent_url(sessions) -> str | None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return session.scalars(select(Host.agent_url).where(Host.name == "gpu2")).one()


def test_set_and_clear_the_agent_url(store, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    assert run(["host", "set", "gpu2", "--agent-url", "http://10.0.0.2:9410/"]) == 0
    assert "gpu2: GPU agent http://10.0.0.2:9410" in capsys.readouterr().out
    assert _agent_url(store) == "http://10.0.0.2:9410"
    with store() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "host.set")).one()
        assert event.target == "gpu2" and event.detail == {"agent_url": "http://10.0.0.2:9410"}
    assert run(["host", "set", "gpu2", "--agent-url", "none"]) == 0
    assert _agent_url(store) is None


def test_bad_agent_urls_are_one_line_and_exit_2(store, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    for bad in ("10.0.0.2:9410", "ftp://10.0.0.2", "http://user:pw@10.0.0.2:9410", "http://10.0.0.2:94x"):
        assert run(["host", "set", "gpu2", "--agent-url", bad]) == 2
        err = capsys.readouterr().err
        assert "invalid agent URL" in err and "Traceback" not in err
    assert run(["host", "set", "nohost", "--agent-url", "http://a:9410"]) == 2
    assert "no host named nohost" in capsys.readouterr().err
    assert _agent_url(store) is None


def test_normalize_agent_url() -> None:
    assert normalize_agent_url(" https://gpu2.lab:9410/agent/ ") == "https://gpu2.lab:9410/agent"
    with pytest.raises(BadInput, match="token is the agent_token setting"):
        normalize_agent_url("http://gpu2:9410/?token=x")
