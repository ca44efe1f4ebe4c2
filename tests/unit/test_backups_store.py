"""Backups of the store alone (no daemon): SQLite's online backup and pg_dump, restored into an empty store;
listing and retention. Containers and homes are in tests/integration/test_backups.py."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from labgpu.errors import BadInput, ConfigError, NotFound
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.context import Actor, Services
from labgpu.services.ops._backup_index import list_backups, read_manifest
from labgpu.services.ops._backup_parts import restore_store
from labgpu.services.ops._backups import apply_retention, create_backup
from labgpu.settings import load_settings
from labgpu.store.db import create_engine_for, session_factory
from labgpu.store.migrate import upgrade
from labgpu.store.models import Member, MemberState, Notice
from tests.postgres import fresh_databases


def _services(tmp: Path, **overrides: str) -> Services:
    settings = load_settings(
        state_dir=str(tmp / "state"),
        backup_dir=str(tmp / "backups"),
        home_base=str(tmp / "home"),
        **overrides,
    )
    engine = create_engine_for(settings)
    upgrade(settings, engine=engine)
    runtime = RuntimeClient(Endpoint.unix(tmp / "no-daemon.sock"))  # a store-only backup needs no daemon
    return Services(
        settings=settings, runtime=runtime, sessions=session_factory(engine), actor=Actor("t@cli")
    )


@pytest.fixture
def pg_databases() -> Iterator[tuple[str, str]]:
    with fresh_databases(2, prefix="labgpu_bk") as (first, second):
        yield first, second


def _fill(svc: Services) -> None:
    with svc.session() as session:
        session.add(Member(name="alice", uid=70001, container="alice", state=MemberState.RUNNING))
        session.add(Notice(message="hello", created_by="t"))


def _check_restored(svc: Services) -> None:
    with svc.session() as session:
        assert [m.name for m in session.scalars(select(Member))] == ["alice"]
        assert [n.message for n in session.scalars(select(Notice))] == ["hello"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_store_backup_restores_into_an_empty_store(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgresql":
        source_url, target_url = request.getfixturevalue("pg_databases")
        src = _services(tmp_path / "a", database_url=source_url)
        dst = _services(tmp_path / "b", database_url=target_url)
    else:
        src, dst = _services(tmp_path / "a"), _services(tmp_path / "b")
    _fill(src)
    result = create_backup(src, containers="none", dest=tmp_path / "backups")
    manifest = read_manifest(result.info.path)
    assert manifest["store"]["backend"] == backend
    assert manifest["runtime"] == {"kind": None, "version": None}
    assert [m["name"] for m in manifest["members"]] == ["alice"]
    store_file = result.info.path / manifest["store"]["file"]
    assert store_file.stat().st_size == manifest["store"]["size"]
    if backend == "sqlite":
        assert not list(result.info.path.glob("*-wal"))  # one self-contained file

    restore_store(dst, result.info.path, manifest["store"])
    _check_restored(dst)
    if backend == "postgresql":
        # The password never reaches a command line: pg_dump got it through PGPASSWORD.
        assert "labgpu-test" not in json.dumps(manifest)


def test_a_store_of_another_kind_is_refused(tmp_path: Path) -> None:
    src = _services(tmp_path / "a")
    result = create_backup(src, containers="none", dest=tmp_path / "backups")
    manifest = read_manifest(result.info.path)
    manifest["store"]["backend"] = "postgresql"
    with pytest.raises(ConfigError, match="same kind of store"):
        restore_store(_services(tmp_path / "b"), result.info.path, manifest["store"])


def test_list_and_retention_touch_only_complete_labgpu_backups(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    dest = tmp_path / "backups"
    names = []
    for _ in range(3):
        names.append(create_backup(svc, containers="none", dest=dest, keep=0).info.name)
        time.sleep(1.05)  # backups are named by the second
    (dest / "labgpu-backup-20000101T000000Z").mkdir()  # no manifest: not a backup, never deleted
    (dest / ".labgpu-backup-20000101T000001Z.partial").mkdir()
    assert [b.name for b in list_backups(dest)] == names[::-1]
    newest = create_backup(svc, containers="none", dest=dest, keep=2)
    assert sorted(newest.removed) == names[:2]
    assert [b.name for b in list_backups(dest)] == [newest.info.name, names[2]]
    assert (dest / "labgpu-backup-20000101T000000Z").is_dir()
    assert apply_retention(dest, 1) == [names[2]]


def test_bad_requests(tmp_path: Path) -> None:
    svc = _services(tmp_path)
    with pytest.raises(BadInput, match="no member named bob"):
        create_backup(svc, containers="bob", dest=tmp_path / "b")
    with pytest.raises(BadInput, match="unknown compression"):
        create_backup(svc, compression="rar", dest=tmp_path / "b")
    with pytest.raises(NotFound):
        read_manifest(tmp_path)
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())
