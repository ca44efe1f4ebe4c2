"""A stop and a start sent together (two browser tabs) leave the store and the daemon agreeing: the
desired state in the store is the one of the change the daemon saw last (found by bench/load.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from labgpu.runtime.instances import Instances
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._power import set_power
from labgpu.store.models import Member
from tests.conftest import LabgpuEnv, unique_name

pytestmark = pytest.mark.integration


def test_a_stop_and_a_start_at_once_lose_no_update(
    labgpu_env: LabgpuEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = labgpu_env.services()
    name = unique_name("pw")
    add_member(svc, validate_request(svc, name=name, gpus="none"), wait_ssh=False)

    # A stop that takes a while (as a clean shutdown does): the start comes while it is under way.
    real_stop = Instances.stop
    stopping = threading.Event()

    def slow_stop(self: Instances, instance: str, **kw: Any) -> Any:
        stopping.set()
        time.sleep(1.5)
        return real_stop(self, instance, **kw)

    monkeypatch.setattr(Instances, "stop", slow_stop)
    errors: list[BaseException] = []

    def power(action: str) -> None:
        try:
            set_power(svc, name, action, force=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    stop = threading.Thread(target=power, args=("stop",))
    stop.start()
    assert stopping.wait(30)
    start = threading.Thread(target=power, args=("start",))
    start.start()
    stop.join(120)
    start.join(120)
    assert not errors

    with svc.session() as session:
        desired = session.scalars(select(Member.state).where(Member.name == name)).one()
    actual = svc.runtime.instances.state(name).status
    # The start was sent last: the store says running, and the container runs.
    assert (str(desired), actual) == ("running", "Running")


def test_a_stop_whose_clean_shutdown_times_out_is_forced(
    labgpu_env: LabgpuEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container that does not shut down in time (its init hangs, or the host is too busy) is stopped
    anyway: the member asked for it, and the portal must not answer 500 with the container still up. The
    daemon's refusal is the one LXD gives after the timeout (seen under load in CI), sent for the clean stop
    only; the forced stop is the daemon's own."""
    from labgpu.runtime.errors import RuntimeError_

    svc = labgpu_env.services()
    name = unique_name("pw")
    add_member(svc, validate_request(svc, name=name, gpus="none"), wait_ssh=False)
    asked: list[bool] = []
    real_stop = Instances.stop

    def stop_timing_out(self: Instances, instance: str, **kw: Any) -> Any:
        asked.append(bool(kw.get("force")))
        if not kw.get("force"):
            raise RuntimeError_(
                f'stop instance {instance}: Failed shutting down instance, status is "Running": '
                "shutting down the container failed"
            )
        return real_stop(self, instance, **kw)

    monkeypatch.setattr(Instances, "stop", stop_timing_out)
    assert set_power(svc, name, "stop") == "Stopped"
    assert asked == [False, True]  # a clean shutdown first, then, as it failed, a forced one
    with svc.session() as session:
        assert str(session.scalars(select(Member.state).where(Member.name == name)).one()) == "stopped"
