"""Notifications on a real store, to a real SMTP server (aiosmtpd) and a real webhook receiver, through
Apprise URLs: every kind reaches the channels that chose it and no other, a dead channel is retried
with a doubling wait and given up in the end, an approval returns before its notification is
delivered, and no secret of a channel's URL reaches a log line, an error or a page."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta

import pytest

from labgpu.errors import BadInput, NotFound
from labgpu.services import notify
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.ops import _jobs as jobs
from labgpu.store.models import Member, Role, utcnow
from tests.conftest import MailBox
from tests.unit.gpu_store import GPUS, T0, GpuStore, H
from tests.webhooks import WebhookServer

SECRET = "s3cret-Pass-9931"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _lab(gpu_store: GpuStore, smtp: MailBox, hooks: WebhookServer, **more: object):  # type: ignore[no-untyped-def]
    with gpu_store.svc().session() as session:
        session.add(Member(name="boss", role=Role.ADMIN, email="boss@lab.test"))
    return gpu_store.svc(
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        mail_from="labgpu@lab.test",
        notify_member_schemes=["json", "form", "wecombot"],
        **more,
    )


def test_every_kind_reaches_the_channels_that_chose_it(
    gpu_store: GpuStore, smtp_server: MailBox, webhook_server: WebhookServer
) -> None:
    hooks = webhook_server
    apprise_mail = f"mailto://{smtp_server.host}:{smtp_server.port}?from=labgpu@lab.test&to=reports@lab.test"
    svc = _lab(
        gpu_store,
        smtp_server,
        hooks,
        notify_urls=[
            hooks.url("json", "/lab"),
            "application, limit-reached="
            + hooks.url("form", "/lab-form").replace("form://", f"form://u:{SECRET}@"),
            "weekly-report=" + apprise_mail,
        ],
    )
    mine = notify.add_channel(
        svc, "alice", url=hooks.url("json", "/alice"), label="phone", kinds=["idle-gpu"]
    )
    assert SECRET not in str(notify.lab_channels(svc.settings)[1].shown)
    assert mine.shown == hooks.url("json", "/alice") and mine.kinds == ("idle-gpu",)

    assert notify.send(svc, notify.IDLE_GPU, ["alice"], "GPU 0 is idle", "line one\nline two") == 2
    assert (
        notify.send(svc, notify.APPLICATION, [notify.ADMINS], "new application: newbie", "Reason: thesis")
        == 3
    )
    assert notify.send(svc, notify.WEEKLY_REPORT, [notify.ADMINS], "week 49", "alice: 12.5 GPU-hours") == 3
    assert notify.send(svc, notify.APPROVAL, ["applicant@elsewhere.test"], "not approved", "sorry") == 1
    assert notify.wait_for_deliveries()

    (alice_mail,) = smtp_server.to("alice@lab.test")
    assert alice_mail["Subject"] == "GPU 0 is idle" and alice_mail.get_content().splitlines() == [
        "line one",
        "line two",
    ]
    (hook,) = hooks.to("/alice")
    assert hook.body["title"] == "GPU 0 is idle" and hook.body["message"] == "line one\nline two"
    assert sorted(h.body["title"] for h in hooks.to("/lab")) == ["new application: newbie", "week 49"]
    (form,) = hooks.to("/lab-form")
    assert form.content_type.startswith("application/x-www-form-urlencoded")
    assert form.body["title"] == "new application: newbie" and form.body["message"] == "Reason: thesis"
    assert sorted(m["Subject"] for m in smtp_server.to("boss@lab.test")) == [
        "new application: newbie",
        "week 49",
    ]
    (report,) = smtp_server.to("reports@lab.test")  # through Apprise's own mailto://
    assert (
        report["Subject"] == "week 49"
        and "alice: 12.5 GPU-hours" in report.get_body(("plain",)).get_content()
    )
    assert smtp_server.to("applicant@elsewhere.test")[0]["Subject"] == "not approved"
    assert {d.status for d in notify.list_deliveries(svc)} == {"sent"}
    assert notify.send(svc, notify.IDLE_GPU, ["bob"], "nothing for bob's channels", "-") == 1  # his mail only


def test_a_dead_channel_is_retried_with_backoff_then_given_up_and_keeps_its_secret(
    gpu_store: GpuStore, smtp_server: MailBox, webhook_server: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hooks = webhook_server
    dead = f"json://ops:{SECRET}@127.0.0.1:{_closed_port()}/dead"
    svc = _lab(
        gpu_store, smtp_server, hooks, notify_urls=[dead, hooks.url("json", "/ok")], notify_max_attempts=3
    )
    hooks.status = 503  # the live one refuses at first

    queued = notify.send(svc, notify.LIMIT_REACHED, [notify.ADMINS], "limit reached", "alice: 40 GPU-hours")
    assert queued == 3  # two lab channels and boss's mail
    assert notify.wait_for_deliveries()
    assert len(smtp_server.to("boss@lab.test")) == 1  # the working channel did not wait for the dead ones
    rows = {d.target: d for d in notify.list_deliveries(svc)}
    failing = [d for d in rows.values() if d.status == "pending"]
    assert len(failing) == 2 and all(d.attempts == 1 for d in failing)
    first = min(d.next_attempt_at for d in failing)
    assert all(
        timedelta(seconds=50) < d.next_attempt_at - d.created_at <= timedelta(seconds=70) for d in failing
    )
    assert any("Connection error" in (d.last_error or "") for d in failing)

    (run,) = jobs.run_once(svc, job="notify", now=first - timedelta(seconds=1))
    assert run.result.lines == ["nothing to send"]  # not due yet
    (run,) = jobs.run_once(svc, job="notify", now=first + timedelta(seconds=1))
    assert (
        run.status == "ok"
        and len(run.result.lines) == 2
        and all("retried later" in x for x in run.result.lines)
    )
    hooks.status = 200  # the receiver is back; the dead one stays dead
    later = first + notify.retry_wait(1) + notify.retry_wait(2)
    (run,) = jobs.run_once(svc, job="notify", now=later)
    assert any(x.endswith(": sent") for x in run.result.lines)
    assert any("given up" in x for x in run.result.lines)  # the third attempt was the last
    assert [(h.body["title"], h.status) for h in hooks.to("/ok")] == [("limit reached", 503)] * 2 + [
        ("limit reached", 200)
    ]
    statuses = sorted(d.status for d in notify.list_deliveries(svc))
    assert statuses == ["failed", "sent", "sent"]
    (run,) = jobs.run_once(svc, job="notify", now=later + timedelta(hours=2))
    assert run.result.lines == ["nothing to send"]  # given up: never again

    shown = " ".join(str(d.as_dict()) for d in notify.list_deliveries(svc))
    assert SECRET not in shown and SECRET not in caplog.text
    assert next(c.channel for c in notify.check_lab_channels(svc)).startswith("json://ops:****@127.0.0.1")


def test_a_second_send_with_the_same_key_is_dropped(gpu_store: GpuStore, smtp_server: MailBox) -> None:
    svc = gpu_store.svc(smtp_host=smtp_server.host, smtp_port=smtp_server.port)
    assert notify.send(svc, notify.BOOKING_REMINDER, ["alice"], "soon", "-", key="booking-reminder:7") == 1
    assert notify.send(svc, notify.BOOKING_REMINDER, ["alice"], "soon", "-", key="booking-reminder:7") == 0
    assert notify.wait_for_deliveries() and len(smtp_server.to("alice@lab.test")) == 1
    with pytest.raises(BadInput):
        notify.send(svc, "no-such-kind", ["alice"], "x", "y")


def test_an_approval_returns_before_its_notification_is_delivered(
    gpu_store: GpuStore, smtp_server: MailBox, webhook_server: WebhookServer
) -> None:
    hooks = webhook_server
    svc = _lab(gpu_store, smtp_server, hooks, booking_approval=True)
    notify.add_channel(svc, "alice", url=hooks.url("json", "/alice"), kinds=["approval"])
    pending = bookings.book(
        svc, member="alice", gpus="0,", start=T0 + H, end=T0 + 3 * H, now=T0, gpus_on_host=GPUS
    )
    hooks.release.clear()  # the receiver holds its answer until the test lets it go
    approved = bookings.approve(svc, pending.id, now=T0)
    # The approval is done and returned while its notification is still on its way (or not yet sent).
    assert approved.status == "approved" and hooks.to("/alice") == []
    assert hooks.arrived.wait(timeout=30)  # the delivery started, and waits on the receiver
    assert hooks.to("/alice") == []
    hooks.release.set()
    assert notify.wait_for_deliveries()
    (hook,) = hooks.to("/alice")
    assert hook.body["title"] == f"GPU booking {pending.id} approved"


def test_members_channels_are_their_own(gpu_store: GpuStore, webhook_server: WebhookServer) -> None:
    svc = gpu_store.svc(notify_member_schemes=["wecombot", "json"])
    key = "0123456789abcdef0123456789abcdef"
    info = notify.add_channel(
        svc, "alice", url=f"wecombot://{key}", label="lab group", kinds=["idle-gpu", "test"]
    )
    assert key not in info.shown and info.shown.startswith("wecombot://") and info.label == "lab group"
    with pytest.raises(NotFound):
        notify.remove_channel(svc, "bob", info.id)  # bob's view: no such channel
    with pytest.raises(NotFound):
        notify.check_channel(svc, "bob", info.id)
    assert [c.id for c in notify.list_channels(svc, "alice")] == [info.id]
    assert notify.list_channels(svc, "bob") == []
    for url, why in [
        ("mailto://smtp.example.test:25?to=x@y.test", "not allowed"),
        ("json://", "not complete"),
        ("wecombot://a b", "one Apprise URL"),
    ]:
        with pytest.raises(BadInput, match=why):
            notify.add_channel(svc, "alice", url=url, kinds=["test"])
    with pytest.raises(BadInput, match="at least one kind"):
        notify.add_channel(svc, "alice", url=webhook_server.url(), kinds=[])
    check = notify.check_channel(
        svc, "alice", notify.add_channel(svc, "alice", url=webhook_server.url(), kinds=["test"]).id
    )
    assert (
        check.status == "sent" and webhook_server.to("/hook")[0].body["title"] == "[labgpu] test notification"
    )
    notify.remove_channel(svc, "alice", info.id)
    assert [c.shown for c in notify.list_channels(svc, "alice")] == [webhook_server.url()]
    with svc.session() as session:
        from sqlalchemy import select

        from labgpu.store.models import AuditEvent

        actions = [
            a for a in session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("notify.%")))
        ]
    assert actions == ["notify.channel.add", "notify.channel.add", "notify.channel.remove"]
    assert utcnow() > T0
