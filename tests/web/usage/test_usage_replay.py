"""A replayed day of 8 GPUs x 20 members (the FAKE ReplayedDay, through the real job runner, sampling,
rollups and store) gives each member exactly the GPU-hours the day was made of; and `labgpu gpu usage`
(the real CLI, a subprocess), the JSON API and the pages all say the same."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from labgpu.services import gpus
from labgpu.store.usage_models import UsageDaily, UsageHourly, UsageSample
from labgpu.web.app import create_app
from tests.web.conftest import login
from tests.web.usage.lab import AFTER, ME, PASSWORD, UsageLab, build_lab, replay


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UsageLab]:
    lab = build_lab(tmp_path_factory.mktemp("usage-lab"))
    replay(lab)
    yield lab
    lab.svc.engine.dispose()


def _hours(rows: list[dict[str, object]]) -> dict[str, float]:
    return {str(r["name"]): float(r["gpu_hours"]) for r in rows}  # type: ignore[arg-type]


def test_a_replayed_day_gives_exact_gpu_hours_per_member(lab: UsageLab) -> None:
    expected = lab.expected_hours()
    assert len(expected) == 20 and len({j.gpu for j in lab.day.jobs}) == 8
    report = gpus.usage_report(lab.svc, since="2d", now=AFTER)
    got = {line.label: line.usage.seconds for line in report.lines}
    # Xorg on GPU 0 all day is nobody's: it is "(others)", 24 GPU-hours.
    assert got.pop("(others)") == 24 * 3600
    assert got == {m: round(h * 3600) for m, h in expected.items()}
    # The day is now in the daily rollup, the same figures; raw samples stay until their keep time.
    with lab.svc.session() as session:
        daily = session.scalar(select(func.sum(UsageDaily.seconds)))
        hourly = session.scalar(select(func.sum(UsageHourly.seconds)))
        raw = session.scalar(select(func.sum(UsageSample.seconds)))
    assert daily == hourly == raw == sum(got.values()) + 24 * 3600
    assert gpus.rollup_marks(lab.svc) == (AFTER.replace(minute=0), AFTER.replace(hour=0, minute=0))
    # Per GPU and per host the same total, split otherwise.
    by_gpu = gpus.usage_report(lab.svc, since="2d", by="gpu", now=AFTER)
    by_host = gpus.usage_report(lab.svc, since="2d", by="host", now=AFTER)
    assert by_gpu.total == by_host.total == report.total
    assert [line.label for line in by_host.lines] == ["gpu1"]
    assert {line.label for line in by_gpu.lines} == {f"gpu1/{i}" for i in range(8)}


def test_the_cli_the_api_and_the_pages_agree(lab: UsageLab, tmp_path: Path) -> None:
    expected = {m: round(h, 4) for m, h in lab.expected_hours().items()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
    env.update(
        LABGPU_STATE_DIR=str(lab.settings.state_dir),
        LABGPU_RUNTIME_URL=lab.settings.runtime_url or "",
        TZ="UTC",
    )
    now = ["--now", AFTER.isoformat()]
    cli = subprocess.run(
        [sys.executable, "-m", "labgpu.cli", "gpu", "usage", "--since", "2d", "--json", *now],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    from_cli = _hours(json.loads(cli.stdout)["rows"])
    from_cli.pop("(others)")
    assert from_cli == expected
    as_csv = subprocess.run(
        [sys.executable, "-m", "labgpu.cli", "gpu", "usage", "--since", "2d", "--csv", "--by", "host", *now],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (host_row,) = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert host_row["host"] == "gpu1"
    assert float(host_row["gpu_hours"]) == pytest.approx(sum(expected.values()) + 24, abs=1e-3)
    bad = subprocess.run(
        [sys.executable, "-m", "labgpu.cli", "gpu", "usage", "--since", "fortnight"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "is not a time span" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr

    # The API and the pages read "now" from the clock: the day lies within the last 7 days.
    app = create_app(lab.settings, services=lab.svc, background=False)
    with (
        TestClient(app, client=("192.0.2.20", 40000)) as admin,
        TestClient(app, client=("192.0.2.21", 40000)) as me,
    ):
        assert login(admin, "boss", PASSWORD).status_code == 303
        assert login(me, ME, PASSWORD).status_code == 303
        api = admin.get("/api/v1/usage", params={"since": "7d"}).json()
        from_api = _hours(api["rows"])
        from_api.pop("(others)")
        assert from_api == expected
        mine = me.get("/api/v1/usage", params={"since": "7d", "by": "member"}).json()
        assert _hours(mine["rows"]) == {ME: expected[ME]}
        other = me.get("/api/v1/usage", params={"since": "7d", "member": "m02"})
        assert other.status_code == 404 and "no member named m02" in other.text
        page = admin.get("/admin/usage", params={"since": "7d"}).text
        for member, hours in expected.items():
            assert (
                f'<tr data-name="{member}"><td>{member}</td>\n      <td class="num gpu-hours">{hours:.2f}</td>'
                in page
            )
        assert page.count("<svg") == 3
        lab_csv = admin.get("/admin/usage.csv", params={"since": "7d"})
        assert lab_csv.headers["content-type"].startswith("text/csv")
        rows = {r["member"]: float(r["gpu_hours"]) for r in csv.DictReader(io.StringIO(lab_csv.text))}
        assert {m: rows[m] for m in expected} == expected
        my_page = me.get("/usage", params={"since": "7d"}).text
        assert f"GPU-hours: {expected[ME]:.2f}" in my_page and "m02" not in my_page
        assert me.get("/admin/usage").status_code == 403
