"""When reconcile may touch a recorded move: not while its process still runs."""

from __future__ import annotations

import subprocess
from datetime import timedelta

from labgpu.services.members._move_recovery import move_in_progress
from labgpu.services.members._moves import same_cluster, this_process
from labgpu.store.models import Host, HostKind, utcnow


def test_a_move_whose_process_runs_is_left_alone() -> None:
    now = utcnow()
    assert move_in_progress(this_process(), now, None) is True
    done = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    dead = {**this_process(), "pid": int(done.stdout)}
    assert move_in_progress(dead, now, timedelta(minutes=15)) is False
    # A reused pid is another process: its start time differs.
    assert move_in_progress({**this_process(), "process_start": "1"}, now, None) is False


def test_a_move_from_another_machine_gets_the_grace_period() -> None:
    other = {"pid": 1, "machine": "elsewhere", "process_start": "5"}
    assert move_in_progress(other, utcnow(), timedelta(minutes=15)) is True
    assert move_in_progress(other, utcnow() - timedelta(minutes=16), timedelta(minutes=15)) is False
    assert move_in_progress(other, utcnow(), None) is False


def test_same_cluster() -> None:
    def host(url: str | None) -> Host:
        return Host(name="x", url=url, kind=HostKind.INCUS)

    a = host("https://10.0.0.1:8443?cluster=lab&target=n1")
    b = host("https://10.0.0.2:8443?cluster=lab&target=n2")
    c = host("https://10.0.0.3:8443?cluster=other&target=n3")
    assert same_cluster(a, b)
    assert not same_cluster(a, c)
    assert not same_cluster(a, host("https://10.0.0.4:8443"))
    assert not same_cluster(a, host(None))
