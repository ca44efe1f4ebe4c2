"""The Grafana dashboard in docs/ asks a REAL Prometheus (Debian's `prometheus`, installed by
scripts/install-deps) for what a REAL `labgpu agent` serves: Prometheus scrapes the agent (over the
recorded 4-GPU host, its token in the scrape config) every second, and every query of every panel, with
Grafana's variables filled in, must answer series, the per-member ones for the recorded members."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.web.gpus.helpers import OWNERS, free_port, serve_agent

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "admin" / "grafana-labgpu-usage.json"
MEMBERS = set(OWNERS.values())


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: run scripts/install-deps --test"
    tmp = tmp_path_factory.mktemp("prometheus")
    with serve_agent(tmp) as agent:
        (tmp / "token").write_text(agent.token)
        target = agent.url.removeprefix("http://")
        (tmp / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: labgpu\n"
            f"    authorization: {{type: Bearer, credentials_file: {tmp / 'token'}}}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "prometheus.log").open("w"),
        )
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = (
                target["expr"]
                .replace("$__rate_interval", "15s")
                .replace("$__range", "1m")
                .replace("$instance", ".*")
            )
            out.append((panel["title"], expr))
    return out


def _query(url: str, expr: str) -> list[dict[str, object]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=5)
    assert r.status_code == 200, (expr, r.text)
    body = r.json()
    assert body["status"] == "success", (expr, body)
    return list(body["data"]["result"])


def test_every_dashboard_query_answers_from_a_scraped_agent(prometheus: str) -> None:
    exprs = _exprs()
    assert len(exprs) >= 6
    pending = dict(exprs)
    answers: dict[str, list[dict[str, object]]] = {}
    deadline = time.monotonic() + 60
    while pending and time.monotonic() < deadline:
        for title, expr in list(pending.items()):
            try:
                result = _query(prometheus, expr)
            except httpx.HTTPError:
                result = []
            if result:
                answers[title] = result
                del pending[title]
        time.sleep(1)
    assert not pending, f"no data for {sorted(pending)}"
    for title, result in answers.items():
        if "member" in title:
            members = {str(series["metric"].get("member")) for series in result}  # type: ignore[union-attr]
            assert members <= MEMBERS and members, (title, members)
    hours = {
        s["metric"]["member"]: float(s["value"][1])  # type: ignore[index]
        for s in answers["GPU-hours per member (time range)"]
    }
    assert all(h > 0 for h in hours.values()), hours
