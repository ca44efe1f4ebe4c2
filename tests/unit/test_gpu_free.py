""" "Tell me when N GPUs are free" on a real store (SQLite, and PostgreSQL when configured): the GPU samples are
taken by the real `gpu-idle` job from the named FAKE readings (the recorded 4-GPU host, its utilization set
by the test), the `gpu-free` job decides, and the one notification reaches a real webhook receiver (the
member's own channel) and a real SMTP server (their address), once."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from labgpu.errors import BadInput, Conflict, NotFound
from labgpu.services import gpus, notify
from labgpu.services.context import Actor
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus._booking_records import NotAllowed
from labgpu.services.ops import _jobs as jobs
from labgpu.store.models import AuditEvent
from tests.conftest import MailBox
from tests.unit.gpu_store import GPUS, MIN, T0, GpuStore
from tests.unit.test_gpu_idle_service import Utilization
from tests.webhooks import WebhookServer


def run(svc, source: Utilization, start, count: int) -> list[jobs.JobRun]:  # type: ignore[no-untyped-def]
    """The gpu-idle job then the gpu-free job, once a minute for ``count`` minutes from ``start``."""
    out = []
    for i in range(count):
        at = start + i * MIN
        jobs.run_job(svc, jobs.JOBS["gpu-idle"], now=at, force=True, gpu_source=lambda: source)
        out.append(jobs.run_job(svc, jobs.JOBS["gpu-free"], now=at, force=True))
    assert notify.wait_for_deliveries()
    return out


def test_a_waiting_member_is_told_once_when_enough_gpus_are_free(
    gpu_store: GpuStore, smtp_server: MailBox, webhook_server: WebhookServer
) -> None:
    admin = gpu_store.svc(smtp_host=smtp_server.host, smtp_port=smtp_server.port, mail_from="labgpu@lab.test",
                          notify_member_schemes=["json"], portal_url="https://gpu.lab.test/")  # fmt: skip
    alice = replace(admin, actor=Actor("alice", is_admin=False))
    notify.add_channel(alice, "alice", url=webhook_server.url("json", "/alice"), kinds=["gpu-free"])
    source = Utilization()  # every GPU busy (90 %)

    view = gpus.ask_when_free(alice, member="alice", count=2, now=T0)
    assert (view.host, view.count, view.status) == ("gpu1", 2, "waiting")
    assert view.expires == T0 + timedelta(hours=24)
    with pytest.raises(Conflict, match="already waits for free GPUs on gpu1"):
        gpus.ask_when_free(alice, member="alice", count=1, now=T0)
    with pytest.raises(NotAllowed):
        gpus.ask_when_free(alice, member="bob", count=1, now=T0)

    runs = run(admin, source, T0, 12)
    assert all(r.status == "ok" for r in runs), [r.as_dict() for r in runs]
    assert runs[-1].result.lines == ["1 request(s) waiting, no GPUs free for them"]

    # GPUs 1 and 3 go quiet, but bob books GPU 3: one free GPU is not two.
    source.util.update({1: 0, 3: 0})
    bookings.book(admin, member="bob", gpus="3,", start=T0 + 12 * MIN, end=T0 + 3 * 60 * MIN,
                  now=T0 + 12 * MIN, gpus_on_host=GPUS)  # fmt: skip
    run(admin, source, T0 + 12 * MIN, 12)
    assert webhook_server.to("/alice") == [] and smtp_server.to("alice@lab.test") == []
    assert gpus.list_free_requests(alice, now=T0 + 24 * MIN)[0].status == "waiting"

    # GPU 2 goes quiet too: after gpu_free_minutes of quiet, alice is told about GPUs 1 and 2.
    source.util[2] = 0
    runs = run(admin, source, T0 + 24 * MIN, 12)
    told = [line for r in runs for line in r.result.lines if line.startswith("told alice")]
    assert told == [f"told alice: GPU 1,2 free on gpu1 (request {view.id})"]
    (hook,) = webhook_server.wait_for("/alice")
    assert hook.body["title"] == "2 GPU(s) free on gpu1: GPU 1, 2"
    assert "https://gpu.lab.test/bookings" in hook.body["message"]
    (mail,) = smtp_server.wait_for("alice@lab.test")
    assert mail["Subject"] == "2 GPU(s) free on gpu1: GPU 1, 2"
    assert "GPU 1, 2 on gpu1 are free now" in mail.get_content()

    # Once: the request is over; more runs send nothing more.
    run(admin, source, T0 + 36 * MIN, 3)
    assert len(webhook_server.to("/alice")) == 1 and len(smtp_server.to("alice@lab.test")) == 1
    (done,) = gpus.list_free_requests(alice, include_all=True, now=T0 + 40 * MIN)
    assert (done.status, done.free_gpus) == ("sent", "1,2")
    assert gpus.list_free_requests(alice, now=T0 + 40 * MIN) == []
    with pytest.raises(Conflict, match="is over already"):
        gpus.cancel_free_request(alice, view.id, now=T0 + 40 * MIN)


def test_requests_expire_are_cancelled_and_are_checked(gpu_store: GpuStore) -> None:
    admin = gpu_store.svc()
    carol = replace(admin, actor=Actor("carol", is_admin=False))
    bob = replace(admin, actor=Actor("bob", is_admin=False))
    source = Utilization()
    run(admin, source, T0, 2)  # samples name the host's 4 GPUs
    with pytest.raises(BadInput, match="gpu1 has 4 GPUs"):
        gpus.ask_when_free(carol, member="carol", count=5, now=T0 + 2 * MIN)
    with pytest.raises(BadInput, match="at most 24 hours"):
        gpus.ask_when_free(carol, member="carol", count=1, hours=25, now=T0)
    with pytest.raises(NotFound, match="no host named gpu9"):
        gpus.ask_when_free(carol, member="carol", count=1, host="gpu9", now=T0)

    short = gpus.ask_when_free(carol, member="carol", count=4, hours=1, now=T0 + 2 * MIN)
    runs = run(admin, source, T0 + 63 * MIN, 1)
    assert f"request {short.id} of carol expired" in runs[0].result.lines
    assert gpus.list_free_requests(carol, include_all=True, now=T0 + 63 * MIN)[0].status == "expired"

    # A cancel: the member's own (another member's is as if it did not exist); an admin's any.
    again = gpus.ask_when_free(carol, member="carol", count=1, now=T0 + 64 * MIN)
    with pytest.raises(NotFound):
        gpus.cancel_free_request(bob, again.id, now=T0 + 64 * MIN)
    assert gpus.list_free_requests(bob, now=T0 + 64 * MIN) == []
    assert [v.id for v in gpus.list_free_requests(admin, now=T0 + 64 * MIN)] == [again.id]
    assert gpus.cancel_free_request(carol, again.id, now=T0 + 64 * MIN).status == "cancelled"
    with admin.session() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.target == "carol"))]
    assert actions == ["gpu.free-request", "gpu.free-request", "gpu.free-request.cancel"]
