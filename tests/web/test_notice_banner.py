"""An admin's maintenance notice is shown at the top of every page while it is active."""

from __future__ import annotations

from datetime import timedelta

from labgpu.services.portal import _notices as notices
from labgpu.store.models import utcnow
from tests.web.conftest import Portal, login


def test_active_notices_are_shown_on_every_page(portal: Portal) -> None:
    notices.add_notice(portal.svc, "Saturday 9:00-12:00: maintenance <b>downtime</b>")
    notices.add_notice(portal.svc, "next month", starts_at=utcnow() + timedelta(days=30))
    portal.add_account("alice")
    client = portal.client()
    assert "maintenance &lt;b&gt;downtime&lt;/b&gt;" in client.get("/login").text
    assert "next month" not in client.get("/apply").text
    assert login(client, "alice").status_code == 303
    assert "Saturday 9:00-12:00" in client.get("/me").text
