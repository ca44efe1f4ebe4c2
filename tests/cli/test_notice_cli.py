"""`labgpu notice` and the notices service: real SQLite store, no daemon needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labgpu.cli.main import run


@pytest.fixture(autouse=True)
def store(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABGPU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LABGPU_RUNTIME_URL", "unix:///nonexistent.sock")  # notices never need the daemon
    monkeypatch.setenv("LABGPU_GATEWAY_SSHD_CONFIG", str(tmp_path / "no-gateway.conf"))
    return tmp_path


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    assert run([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_add_list_remove_with_audit(capsys: pytest.CaptureFixture[str]) -> None:
    added = _json(capsys, "notice", "add", "Maintenance Saturday 9-12", "--until", "2d")
    assert isinstance(added, dict)
    ends = datetime.fromisoformat(added["ends_at"])
    assert timedelta(days=1, hours=23) < ends - datetime.now(UTC) <= timedelta(days=2)
    later = _json(capsys, "notice", "add", "New GPUs next month", "--from", "1w")
    listed = _json(capsys, "notice", "list")
    assert isinstance(listed, list) and isinstance(later, dict)
    assert [n["message"] for n in listed] == ["Maintenance Saturday 9-12", "New GPUs next month"]

    from labgpu.services.context import Actor, Services
    from labgpu.services.portal._notices import active_notices
    from labgpu.settings import load_settings
    from labgpu.store.db import create_engine_for, session_factory

    settings = load_settings()
    svc = Services(
        settings=settings,
        runtime=None,
        sessions=session_factory(create_engine_for(settings)),
        actor=Actor("t"),
    )  # type: ignore[arg-type]
    assert [n.message for n in active_notices(svc)] == ["Maintenance Saturday 9-12"]
    assert [n.message for n in active_notices(svc, now=datetime.now(UTC) + timedelta(days=8))] == [
        "New GPUs next month"
    ]

    assert run(["notice", "rm", str(added["id"])]) == 0
    assert [n["message"] for n in _json(capsys, "notice", "list")] == ["New GPUs next month"]  # type: ignore[union-attr]
    assert run(["notice", "rm", str(added["id"])]) == 2  # gone: NotFound, one line
    assert "no notice" in capsys.readouterr().err
    from sqlalchemy import select

    from labgpu.store.models import AuditEvent

    with svc.session() as session:
        actions = [a.action for a in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert actions == ["notice.add", "notice.add", "notice.rm"]


def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["notice", "add", "   "]) == 2
    assert "needs a message" in capsys.readouterr().err
    assert run(["notice", "add", "x" * 1001]) == 2
    assert "at most 1000" in capsys.readouterr().err
    assert run(["notice", "add", "hi", "--until", "next tuesday"]) == 2
    assert "cannot read the time" in capsys.readouterr().err
    assert run(["notice", "add", "hi", "--from", "2030-01-02 10:00", "--until", "2030-01-01 10:00"]) == 2
    assert "end before it starts" in capsys.readouterr().err


def test_messages_lose_control_characters() -> None:
    from labgpu.services.portal._notices import clean_message

    assert (
        clean_message("  Reboot \x1b[31mtonight\x07\n  second line  \n")
        == "Reboot [31mtonight\n  second line"
    )
