"""The idle rule: below the threshold for long enough, seen without holes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labgpu.domain.gpus import IdleRule, UtilizationSample, idle_verdict
from labgpu.errors import BadInput

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
RULE = IdleRule(threshold=5, duration=timedelta(minutes=30), max_gap=timedelta(minutes=5))


def series(values: list[float | None], every: timedelta = MIN) -> list[UtilizationSample]:
    return [UtilizationSample(T0 + i * every, v) for i, v in enumerate(values)]


def test_idle_after_the_duration_below_threshold() -> None:
    samples = series([80.0] * 10 + [2.0] * 31)  # low from minute 10 to minute 40
    v = idle_verdict(samples, RULE, now=T0 + 40 * MIN)
    assert v.idle and v.since == T0 + 10 * MIN and v.idle_minutes == 30
    assert not idle_verdict(samples[:-1], RULE, now=T0 + 39 * MIN).idle  # 29 minutes: not yet


def test_a_busy_sample_restarts_the_clock() -> None:
    samples = series([1.0] * 20 + [50.0] + [1.0] * 20)
    v = idle_verdict(samples, RULE, now=T0 + 40 * MIN)
    assert not v.idle and v.since == T0 + 21 * MIN


def test_busy_now_is_not_idle() -> None:
    v = idle_verdict(series([0.0] * 60 + [30.0]), RULE, now=T0 + 60 * MIN)
    assert (v.idle, v.since) == (False, None)


def test_holes_and_unknown_samples_restart_the_clock() -> None:
    holey = series([0.0] * 20) + [UtilizationSample(T0 + 30 * MIN + i * MIN, 0.0) for i in range(20)]
    v = idle_verdict(holey, RULE, now=T0 + 49 * MIN)
    assert not v.idle and v.since == T0 + 30 * MIN  # the 10-minute hole broke the run
    unknown = series([0.0] * 20 + [None] + [0.0] * 20)
    assert idle_verdict(unknown, RULE, now=T0 + 40 * MIN).since == T0 + 21 * MIN


def test_stale_samples_say_nothing() -> None:
    samples = series([0.0] * 60)
    assert not idle_verdict(samples, RULE, now=T0 + 59 * MIN + RULE.max_gap + MIN).idle
    assert not idle_verdict([], RULE, now=T0).idle


def test_order_of_samples_does_not_matter() -> None:
    samples = series([0.0] * 40)
    assert idle_verdict(list(reversed(samples)), RULE, T0 + 39 * MIN) == idle_verdict(
        samples, RULE, T0 + 39 * MIN
    )


def test_bad_rules() -> None:
    with pytest.raises(BadInput):
        IdleRule(threshold=0)
    with pytest.raises(BadInput):
        IdleRule(duration=timedelta(0))


@given(st.lists(st.one_of(st.none(), st.floats(0, 100)), max_size=80))
def test_idle_only_if_every_sample_of_the_run_is_low(values: list[float | None]) -> None:
    samples = series(values)
    now = T0 + max(len(values) - 1, 0) * MIN
    v = idle_verdict(samples, RULE, now)
    if v.idle:
        assert v.since is not None
        run = [s for s in samples if s.at >= v.since]
        assert all(s.utilization is not None and s.utilization < RULE.threshold for s in run)
        assert run[-1].at - run[0].at >= RULE.duration
