"""The member's Notifications page (/account/notifications), in English and Chinese: add a channel (an
Apprise URL to a real webhook receiver), send it a test, remove it. A member reaches only their own
channels; the URL's key is never shown back; hostile URLs are refused and nothing is stored."""

from __future__ import annotations

from fastapi.testclient import TestClient

from labgpu.services import notify
from labgpu.web.app import create_app
from tests.conftest import MailBox
from tests.web.conftest import Portal, csrf_from, login
from tests.web.test_i18n import untranslated
from tests.webhooks import WebhookServer

KEY = "0123456789abcdef0123456789abcdef"


def test_a_member_adds_tests_and_removes_a_channel_of_their_own(
    portal: Portal, smtp_server: MailBox, webhook_server: WebhookServer
) -> None:
    settings = portal.settings.model_copy(
        update={
            **smtp_server.settings(),
            "smtp_port": smtp_server.port,
            "notify_member_schemes": ["json", "wecombot"],
        }
    )
    portal.add_account("alice")
    portal.add_account("bob")
    app = create_app(settings)
    with (
        TestClient(app, client=("192.0.2.20", 40000)) as alice,
        TestClient(app, client=("192.0.2.21", 40000)) as bob,
    ):
        assert login(alice, "alice").status_code == 303
        assert login(bob, "bob").status_code == 303
        page = alice.get("/account/notifications")
        assert page.status_code == 200 and "You have no channels of your own." in page.text
        token = csrf_from(page.text)

        added = alice.post(
            "/account/notifications",
            data={
                "csrf_token": token,
                "label": "group bot",
                "url": f"wecombot://{KEY}",
                "kind": ["idle-gpu", "test"],
            },
        )
        assert added.status_code == 200 and "Channel group bot added" in added.text
        assert KEY not in added.text and "wecombot://" in added.text
        hook = alice.post(
            "/account/notifications",
            data={"csrf_token": token, "label": "hook", "url": webhook_server.url(), "kind": "test"},
        )
        assert hook.status_code == 200
        bot, mine = notify.list_channels(portal.svc, "alice")

        tested = alice.post(f"/account/notifications/{mine.id}/test", data={"csrf_token": token})
        assert "A test message was sent to hook" in tested.text
        assert webhook_server.to("/hook")[0].body["title"] == "[labgpu] test notification"

        # Another member's channel is as missing as one that does not exist.
        bob_token = csrf_from(bob.get("/account/notifications").text)
        for action in ("test", "remove"):
            theirs = bob.post(f"/account/notifications/{bot.id}/{action}", data={"csrf_token": bob_token})
            nobody = bob.post(f"/account/notifications/999999/{action}", data={"csrf_token": bob_token})
            assert theirs.status_code == nobody.status_code == 404
        assert f"wecombot://{KEY[0]}" not in bob.get("/account/notifications").text
        assert len(webhook_server.to("/hook")) == 1

        # Hostile or unsupported URLs: refused, nothing stored, the URL not echoed.
        for url in (
            "wecombot://a\nb",
            "javascript://alert(1)",
            f"mailto://x:{KEY}@smtp.elsewhere.test",
            "x" * 2001,
        ):
            r = alice.post("/account/notifications", data={"csrf_token": token, "url": url, "kind": "test"})
            assert r.status_code in (400, 422) and KEY not in r.text
        assert len(notify.list_channels(portal.svc, "alice")) == 2

        removed = alice.post(f"/account/notifications/{bot.id}/remove", data={"csrf_token": token})
        assert "Channel group bot removed." in removed.text
        assert [c.id for c in notify.list_channels(portal.svc, "alice")] == [mine.id]

    with TestClient(app, client=("192.0.2.22", 40000), headers={"Accept-Language": "zh-CN"}) as zh:
        assert login(zh, "alice").status_code == 303
        html = zh.get("/account/notifications").text
        assert "我的渠道" in html and "添加渠道" in html and "发送测试" in html
        assert untranslated(html) == []
        assert "我的通知渠道" in zh.get("/account").text
