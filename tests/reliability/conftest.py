"""The fault suite's fixtures: the CI form / full matrix selection, and the figures each scenario reports.

Every scenario records one line (scenario, step, daemon, faults injected, recovered, invariants
checked, outcome); with ``LABGPU_FAULT_REPORT=FILE`` the lines are appended to FILE as JSON, which
``scripts/fault-suite`` sums up into the figures of docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from labgpu.services.ops._invariants import InvariantReport, Marker, check_invariants
from tests.integration.multihost.conftest import hosts_env, test_daemons  # noqa: F401 - fixtures
from tests.reliability.harness import full_run

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if full_run():
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("faults_full") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@dataclass
class Fault:
    """One scenario's record: what was injected, whether it was recovered, what was checked."""

    scenario: str
    step: str
    daemon: str
    injected: int = 0
    recovered: bool = False
    checks: int = 0
    violations: list[dict[str, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def inject(self, what: str = "") -> None:
        self.injected += 1

    def killed(self, result: subprocess.CompletedProcess[str]) -> None:
        """The process died by the injected SIGKILL (not by an error of its own)."""
        assert result.returncode == -9, (
            f"exit {result.returncode}: {result.stdout[-2000:]} {result.stderr[-3000:]}"
        )
        self.inject()

    def recover(self, result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
        """The recovery command ran without a failure; returns its JSON."""
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
        return json.loads(result.stdout) if result.stdout.strip().startswith(("{", "[")) else {}

    def check(
        self,
        svc: Any,
        *,
        markers: Mapping[str, Marker] | None = None,
        owners: Collection[str],
    ) -> InvariantReport:
        """Check every invariant for ``owners`` (the daemons are shared); fails the test on a violation."""
        report = check_invariants(svc, markers=markers, owners=owners)
        self.checks += report.checks
        self.violations = [v.as_dict() for v in report.violations]
        assert report.ok, "\n".join(f"{v.invariant} {v.subject}: {v.detail}" for v in report.violations)
        self.recovered = True
        return report


@pytest.fixture
def fault(request: pytest.FixtureRequest) -> Iterator[Fault]:
    callspec = getattr(request.node, "callspec", None)
    params = dict(callspec.params) if callspec else {}
    scenario = request.node.get_closest_marker("scenario")
    record = Fault(
        scenario=scenario.args[0] if scenario else request.node.originalname,
        step=str(params.get("step", "-")),
        daemon=str(params.get("daemon_kind", params.get("how", "incus"))),
    )
    yield record
    call = getattr(request.node, "rep_call", None)
    outcome = call.outcome if call is not None else "error"
    line = {
        "test": request.node.nodeid,
        "scenario": record.scenario,
        "step": record.step,
        "daemon": record.daemon,
        "injected": record.injected,
        "recovered": record.recovered and outcome == "passed",
        "checks": record.checks,
        "violations": record.violations,
        "outcome": outcome,
        "seconds": round(time.monotonic() - record.started, 1),
    }
    path = os.environ.get("LABGPU_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
