"""Load, shortened: bench/load.py's four parts at the --quick scale (5 applications approved at once, 10
containers listed, 4 members stopping and starting in parallel, 10 portal users at once) against a real
daemon and `labgpu serve`, on SQLite and on PostgreSQL. Asserts correctness only (no 5xx, nothing lost,
store and daemon agreeing), never timings; the full run and its figures: docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.load import QUICK, run_load, table

from tests.conftest import LabgpuEnv, port_block
from tests.postgres import empty_postgres

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_load_quick_loses_nothing(
    labgpu_env: LabgpuEnv, daemon_kind: str, database: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Ports above the kernel's ephemeral range: the run's own 10 clients must not take the one a proxy wants
    # (the blocks of bench.load.port_block, one per xdist worker).
    start, end = port_block(61000, 65499)
    overrides = {**labgpu_env.overrides, "port_range_start": str(start), "port_range_end": str(end)}
    if database == "postgresql":
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
        overrides["database_url"] = url
    workdir = tmp_path / "load"
    workdir.mkdir()
    report = run_load(daemon_kind, overrides, QUICK, workdir=workdir, raw=False, database=database)
    print(table(report))
    assert report.checks and not report.failures, table(report)
