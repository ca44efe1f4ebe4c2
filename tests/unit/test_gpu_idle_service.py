"""Idle GPUs on a real store, GPU readings replayed from a recording, mail to a real SMTP server:
samples taken through the inventory, one mail per idle spell (not per check), idle time before a
booking started not held against it, release when policy says so, mail failures retried."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from labgpu.gpu.fake import RecordedNvml
from labgpu.gpu.nvml import NvmlReading
from labgpu.services import notify
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus._holders import idle_gpus
from labgpu.services.ops import _jobs as jobs
from labgpu.store.models import BookingSlot, GpuSample, Host, Member
from tests.conftest import MailBox
from tests.unit.gpu_store import GPUS, MIN, T0, GpuStore, H

RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / "nvml" / "four-gpus.json"


class Utilization(RecordedNvml):
    """FAKE: the recorded 4-GPU host, with each GPU's utilization set by the test."""

    def __init__(self) -> None:
        super().__init__(RecordedNvml.from_file(RECORDING).read())
        self.base: NvmlReading = self.reading  # type: ignore[assignment]
        self.util = dict.fromkeys(range(4), 90)

    def read(self) -> NvmlReading:
        self.reading = replace(
            self.base, gpus=tuple(replace(g, utilization=self.util[g.index]) for g in self.base.gpus)
        )
        return super().read()


def minutes(svc, source: Utilization, start: datetime, count: int) -> list[jobs.JobRun]:  # type: ignore[no-untyped-def]
    """Run the gpu-idle job once a minute for ``count`` minutes from ``start``; then wait for the
    notifications it queued to be delivered (they go out in the background)."""
    runs = [
        jobs.run_job(svc, jobs.JOBS["gpu-idle"], now=start + i * MIN, force=True, gpu_source=lambda: source)
        for i in range(count)
    ]
    assert notify.wait_for_deliveries()
    return runs


def mail_settings(box: MailBox, **more: object) -> dict[str, object]:
    return {"smtp_host": box.host, "smtp_port": box.port, "mail_from": "labgpu@lab.test", **more}


def test_one_mail_per_idle_spell_counted_from_the_booking_start(
    gpu_store: GpuStore, smtp_server: MailBox
) -> None:
    svc = gpu_store.svc(**mail_settings(smtp_server))
    source = Utilization()
    view = bookings.book(
        svc, member="alice", gpus="0,1", start=T0 + H, end=T0 + 8 * H, now=T0, gpus_on_host=GPUS
    )
    source.util[0] = 1  # GPU 0 idles from the start; GPU 1 works
    minutes(svc, source, T0, 60)  # an idle hour BEFORE the booking: not alice's
    bookings.advance(svc, now=T0 + H)
    minutes(svc, source, T0 + H, 60)
    assert smtp_server.to("alice@lab.test") == []  # 59 minutes of her booking: not yet
    assert idle_gpus(svc, now=T0 + 2 * H - MIN) == []
    runs = minutes(svc, source, T0 + 2 * H, 30)  # the 60th minute, and half an hour more
    mails = smtp_server.to("alice@lab.test")
    assert [m["Subject"] for m in mails] == ["GPU 0 on gpu1 is idle"]
    assert "under 5% utilization for 60 minutes" in mails[0].get_content()
    assert f"booking {view.id}" in mails[0].get_content()
    assert "told alice: GPU 0" in runs[0].result.lines and all(r.status == "ok" for r in runs)
    (idle,) = idle_gpus(svc, now=T0 + 2 * H + 29 * MIN)
    assert (idle.gpu, idle.member, idle.booking, idle.since, idle.minutes) == (
        0,
        "alice",
        view.id,
        T0 + H,
        89,
    )

    source.util[0] = 60  # she uses it for a minute: the spell ends
    minutes(svc, source, T0 + 2 * H + 30 * MIN, 1)
    source.util[0] = 0
    minutes(svc, source, T0 + 2 * H + 31 * MIN, 61)  # a new idle hour: a new mail
    assert len(smtp_server.to("alice@lab.test")) == 2
    with svc.session() as session:
        assert session.scalar(select(func.count()).select_from(GpuSample)) == 4 * (60 + 60 + 30 + 1 + 61)
    assert bookings.get_booking(svc, view.id).status == "active"  # notify only: nothing released


def test_a_restart_does_not_mail_again(gpu_store: GpuStore, smtp_server: MailBox) -> None:
    svc = gpu_store.svc(**mail_settings(smtp_server))
    source = Utilization()
    source.util[2] = 0
    bookings.book(svc, member="bob", gpus="2,", start=T0, end=T0 + 5 * H, now=T0, gpus_on_host=GPUS)
    bookings.advance(svc, now=T0)
    minutes(svc, source, T0, 70)
    restarted = gpu_store.svc(**mail_settings(smtp_server))  # new services: only the store remembers
    minutes(restarted, source, T0 + 70 * MIN, 10)
    assert len(smtp_server.to("bob@lab.test")) == 1


def test_release_ends_a_booking_whose_gpus_are_all_idle(gpu_store: GpuStore, smtp_server: MailBox) -> None:
    svc = gpu_store.svc(**mail_settings(smtp_server, gpu_idle_action="release", gpu_idle_minutes=30))
    source = Utilization()
    both = bookings.book(svc, member="carol", gpus="2,3", start=T0, end=T0 + 5 * H, now=T0, gpus_on_host=GPUS)
    bookings.advance(svc, now=T0)
    source.util[2] = 0
    minutes(svc, source, T0, 31)  # one of two idle: told, not released
    assert bookings.get_booking(svc, both.id).status == "active"
    assert [m["Subject"] for m in smtp_server.to("carol@lab.test")] == ["GPU 2 on gpu1 is idle"]
    assert "released automatically" in smtp_server.to("carol@lab.test")[0].get_content()
    source.util[3] = 0
    runs = minutes(svc, source, T0 + 31 * MIN, 31)
    released = bookings.get_booking(svc, both.id)
    assert released.status == "ended" and released.end == T0 + 61 * MIN
    assert smtp_server.to("carol@lab.test")[-1]["Subject"] == "GPU 2, 3 on gpu1 released: idle"
    with svc.session() as session:
        assert (
            session.scalar(
                select(func.count()).select_from(BookingSlot).where(BookingSlot.booking_id == both.id)
            )
            == 0
        )
    last = runs[-1]
    assert f"released booking {both.id}" in last.result.lines
    # No daemon here: the detach waits for the bookings job, and the run says so.
    assert last.status == "failed" and "released GPUs on gpu1 not detached yet" in last.result.errors[0]
    bookings.book(
        svc,
        member="alice",
        gpus="2,3",
        start=T0 + 62 * MIN,
        end=T0 + 3 * H,
        now=T0 + 62 * MIN,
        gpus_on_host=GPUS,
    )


def test_assigned_gpus_are_watched_and_only_notified(gpu_store: GpuStore, smtp_server: MailBox) -> None:
    svc = gpu_store.svc(**mail_settings(smtp_server, gpu_idle_action="release", gpu_idle_minutes=20))
    with svc.session() as session:
        session.scalars(select(Host)).one().gpu_mode = "assigned"
        session.scalars(select(Member).where(Member.name == "bob")).one().gpu_spec = "1"
    source = Utilization()
    source.util[1] = 3
    minutes(svc, source, T0, 25)
    (mail,) = smtp_server.to("bob@lab.test")
    assert mail["Subject"] == "GPU 1 on gpu1 is idle" and "your assigned GPUs" in mail.get_content()


def test_a_mail_that_cannot_be_sent_is_tried_again(gpu_store: GpuStore, smtp_server: MailBox) -> None:
    source = Utilization()
    source.util[0] = 0
    broken = gpu_store.svc(smtp_host="127.0.0.1", smtp_port=1, gpu_idle_minutes=10)
    bookings.book(broken, member="alice", gpus="0,", start=T0, end=T0 + 5 * H, now=T0, gpus_on_host=GPUS)
    bookings.advance(broken, now=T0)
    runs = minutes(broken, source, T0, 11)
    assert (
        runs[-1].status == "ok" and "told alice: GPU 0" in runs[-1].result.lines
    )  # queued: not the job's failure
    (queued,) = notify.list_deliveries(broken)
    assert queued.status == "pending" and queued.attempts == 1 and "127.0.0.1:1" in (queued.last_error or "")
    fixed = gpu_store.svc(**mail_settings(smtp_server, gpu_idle_minutes=10))
    minutes(fixed, source, T0 + 11 * MIN, 3)  # the same spell: not queued again
    assert smtp_server.to("alice@lab.test") == []
    (run,) = jobs.run_once(fixed, job="notify", now=queued.next_attempt_at)
    assert run.status == "ok" and run.result.lines == [
        f"notification {queued.id} to mail:alice@lab.test: sent"
    ]
    assert len(smtp_server.to("alice@lab.test")) == 1


def test_no_gpu_no_samples(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc()
    (run,) = [jobs.run_job(svc, jobs.JOBS["gpu-idle"], now=T0, force=True,
                           gpu_source=lambda: RecordedNvml(unavailable="NVML library libnvidia-ml.so.1 not found"))]  # fmt: skip
    assert run.status == "ok"
    assert run.result.lines[0].startswith("0 GPU sample(s) (no NVIDIA GPU on this host (NVML library")


def test_prune_deletes_old_samples(gpu_store: GpuStore) -> None:
    svc = gpu_store.svc(gpu_samples_keep_days=1)
    source = Utilization()
    minutes(svc, source, T0, 2)
    (run,) = jobs.run_once(svc, job="prune", now=T0 + timedelta(days=1, minutes=2))
    assert run.result.lines[0] == "8 old GPU sample(s) and 0 booking slot(s) of ended bookings deleted"
