"""GPU bookings through the JSON API and the bookings board: a member books (the GPUs of their host come from
its REAL agent: no daemon here), sees it on the board, extends and cancels it; a clash is a 409 naming who
holds the GPU, or one inline sentence on the form; nobody touches another member's booking (404) or approves
(403); admins approve and reject, and every change is in the audit log with who and from where."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from labgpu.services.portal import _audit as audit
from labgpu.store.models import AuditEvent
from tests.web.conftest import Portal, login, page_token
from tests.web.gpus.helpers import PortalFactory, ServedAgent, add_host, add_member, lab
from tests.web.test_i18n import untranslated

MEMBER_ADDRESS = "192.0.2.21"


def member(portal: Portal, name: str, address: str = MEMBER_ADDRESS, **kwargs: Any) -> tuple[TestClient, str]:
    """A logged-in browser of ``name`` and its CSRF token (for the API's X-CSRF-Token header)."""
    client = portal.client(address, **kwargs)
    assert login(client, name).status_code == 303
    return client, page_token(client, "/account")


def book(client: TestClient, csrf: str, **body: Any) -> Any:
    return client.post("/api/v1/bookings", json=body, headers={"X-CSRF-Token": csrf})


def post(client: TestClient, csrf: str, path: str, **body: Any) -> Any:
    return client.post(path, json=body, headers={"X-CSRF-Token": csrf})


# The API ------------------------------------------------------------------------------------------


def test_book_list_extend_cancel(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, csrf = member(portal, "alice")
    r = book(alice, csrf, gpus=2, until="+2h", note="ICML rebuttal")
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["member"], made["host"], made["gpus"], made["status"]) == (
        "alice",
        "gpu1",
        [0, 1],
        "approved",
    )
    start, end = datetime.fromisoformat(made["start"]), datetime.fromisoformat(made["end"])
    assert start.minute % 15 == 0 and timedelta(hours=2) <= end - start <= timedelta(hours=2, minutes=15)

    chosen = book(alice, csrf, gpus=[3], **{"from": "+3h"}, until="+1h").json()
    length = datetime.fromisoformat(chosen["end"]) - datetime.fromisoformat(chosen["start"])
    assert chosen["gpus"] == [3] and timedelta(hours=1) <= length <= timedelta(hours=1, minutes=30)
    assert [b["id"] for b in alice.get("/api/v1/bookings").json()] == [made["id"], chosen["id"]]

    longer = post(alice, csrf, f"/api/v1/bookings/{made['id']}/extend", until="+1h")
    assert longer.status_code == 200
    assert datetime.fromisoformat(longer.json()["end"]) == end + timedelta(hours=1)

    gone = post(alice, csrf, f"/api/v1/bookings/{chosen['id']}/cancel")
    assert gone.status_code == 200
    assert (gone.json()["status"], gone.json()["ended_early"]) == ("cancelled", False)
    assert [b["id"] for b in alice.get("/api/v1/bookings").json()] == [made["id"]]
    assert {b["status"] for b in alice.get("/api/v1/bookings?all=1").json()} == {"approved", "cancelled"}
    again = post(alice, csrf, f"/api/v1/bookings/{chosen['id']}/cancel")
    assert (
        again.status_code == 409
        and again.json()["error"]["message"] == f"booking {chosen['id']} is cancelled already"
    )

    actions = [
        (e.action, e.actor, e.source_address)
        for e in reversed(audit.list_events(portal.svc, action="booking.", limit=10))
    ]
    assert actions == [
        ("booking.add", "alice", MEMBER_ADDRESS),
        ("booking.add", "alice", MEMBER_ADDRESS),
        ("booking.extend", "alice", MEMBER_ADDRESS),
        ("booking.cancel", "alice", MEMBER_ADDRESS),
    ]


def test_a_clash_is_a_409_naming_who_holds_the_gpu(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, a_csrf = member(portal, "alice")
    bob, b_csrf = member(portal, "bob", "192.0.2.22")
    assert book(alice, a_csrf, gpus=[0, 1], until="+4h").status_code == 201
    r = book(bob, b_csrf, gpus=[1], **{"from": "+1h"}, until="+1h")
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["reason"] == "booking-conflict"
    assert error["message"].startswith("GPU 1 is booked by alice from ")
    r = book(bob, b_csrf, gpus=3, until="+1h")  # only two are free
    assert r.status_code == 409 and r.json()["error"]["reason"] == "exhausted"
    assert book(bob, b_csrf, gpus=2, until="+1h").json()["gpus"] == [2, 3]


def test_nobody_touches_another_members_booking(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, a_csrf = member(portal, "alice")
    bob, b_csrf = member(portal, "bob", "192.0.2.22")
    mine = book(alice, a_csrf, gpus=1, until="+2h").json()["id"]
    missing = mine + 100
    for action, body in (("cancel", {}), ("extend", {"until": "+1h"})):
        theirs = post(bob, b_csrf, f"/api/v1/bookings/{mine}/{action}", **body)
        nothing = post(bob, b_csrf, f"/api/v1/bookings/{missing}/{action}", **body)
        assert theirs.status_code == nothing.status_code == 404
        assert theirs.json()["error"]["message"] == f"no booking {mine}"
    assert bob.get(f"/api/v1/bookings/{mine}").status_code == 404
    assert bob.get("/api/v1/bookings").json() == []
    assert bob.get("/api/v1/bookings?member=alice").status_code == 403
    for action, body in (("approve", {}), ("reject", {"reason": "mine now"})):
        r = post(bob, b_csrf, f"/api/v1/bookings/{mine}/{action}", **body)
        assert r.status_code == 403 and r.json()["error"]["message"] == "only an admin may do this"
    r = book(bob, b_csrf, gpus=1, until="+2h", member="alice")
    assert (
        r.status_code == 403
        and r.json()["error"]["message"] == "only alice or an admin may book GPUs for alice"
    )
    # Pages: the same, as one sentence on the board.
    board_csrf = page_token(bob, "/bookings")
    r = bob.post(f"/bookings/{mine}/cancel", data={"csrf_token": board_csrf})
    assert r.status_code == 404 and f"no booking {mine}" in r.text
    r = bob.post(f"/bookings/{mine}/approve", data={"csrf_token": board_csrf})
    assert r.status_code == 403
    assert alice.get(f"/api/v1/bookings/{mine}").json()["status"] == "approved"


def test_admins_approve_and_reject_and_it_is_audited(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent, smtp_server: Any
) -> None:
    portal, _ = lab(gpu_portal, gpu_agent, booking_approval=True, **smtp_server.settings())
    with portal.svc.session() as session:
        from labgpu.store.models import Member

        for row in session.scalars(select(Member)):
            row.email = f"{row.name}@lab.test"
    alice, a_csrf = member(portal, "alice")
    first = book(alice, a_csrf, gpus=[0], until="+2h").json()
    second = book(alice, a_csrf, gpus=[1], until="+2h").json()
    assert first["status"] == second["status"] == "pending"
    # A pending request already holds its GPU.
    bob, b_csrf = member(portal, "bob", "192.0.2.22")
    assert book(bob, b_csrf, gpus=[0], until="+1h").status_code == 409

    boss, s_csrf = member(portal, "boss", "192.0.2.99")
    assert {b["id"] for b in boss.get("/api/v1/bookings").json()} == {first["id"], second["id"]}
    r = post(boss, s_csrf, f"/api/v1/bookings/{first['id']}/approve")
    assert r.status_code == 200 and r.json()["status"] == "approved"
    r = post(boss, s_csrf, f"/api/v1/bookings/{second['id']}/reject", reason="GPU 1 is for the course")
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    r = post(boss, s_csrf, f"/api/v1/bookings/{second['id']}/approve")
    assert (
        r.status_code == 409
        and r.json()["error"]["message"] == f"booking {second['id']} is rejected, not pending"
    )
    assert book(bob, b_csrf, gpus=[1], until="+1h").status_code == 201  # the rejected one freed GPU 1

    with portal.svc.session() as session:
        events = {
            e.action: (e.actor, e.source_address, e.detail)
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.action.in_(["booking.approve", "booking.reject"]))
            )
        }
    assert events["booking.approve"] == ("boss", "192.0.2.99", {"booking": first["id"]})
    assert events["booking.reject"] == (
        "boss",
        "192.0.2.99",
        {"booking": second["id"], "reason": "GPU 1 is for the course"},
    )
    subjects = [m["Subject"] for m in smtp_server.wait_for("alice@lab.test", count=2)]
    assert f"GPU booking {first['id']} approved" in subjects
    assert f"GPU booking {second['id']} rejected" in subjects


def test_an_admin_books_for_a_member(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    boss, csrf = member(portal, "boss", "192.0.2.99")
    r = book(boss, csrf, gpus=1, until="+1h", member="carol")
    assert r.status_code == 201 and r.json()["member"] == "carol"
    r = book(boss, csrf, gpus=1, until="+1h")  # the admin has no container
    assert r.status_code == 400
    assert (
        r.json()["error"]["message"]
        == "boss has no container on any host, so there is nothing to attach GPUs to"
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"gpus": True, "until": "+1h"}, 422, "gpus"),
        ({"gpus": [], "until": "+1h"}, 422, "gpus"),
        ({"gpus": 0, "until": "+1h"}, 422, "gpus"),
        ({"gpus": "2", "until": "+1h"}, 422, "gpus"),
        ({"gpus": 1}, 422, "until: Field required"),
        ({"gpus": 1, "until": "+1h", "colour": "red"}, 422, "colour"),
        ({"gpus": 1, "until": "tomorrow-ish"}, 400, "until: invalid time 'tomorrow-ish'"),
        ({"gpus": 1, "until": "+1h", "from": "2020-01-01 10:00"}, 400, "in the past"),
        ({"gpus": 1, "until": "+10m"}, 400, "a booking lasts at least"),
        ({"gpus": [7], "until": "+1h"}, 400, "host gpu1 has no GPU 7 (it has: 0, 1, 2, 3)"),
        ({"gpus": 1, "until": "+1h", "note": "x" * 256}, 422, "note"),
        ({"gpus": 1, "until": "+1h", "note": "a\x00b"}, 400, "the note must be one line of printable text"),
        ({"gpus": 1, "until": "+99999999999w"}, 400, "is more than 10 years from now"),
        ({"gpus": 1, "until": "9999-12-31T23:59"}, 400, "is more than 10 years from now"),
        ({"gpus": 1, "until": "+1h", "member": "Not A Name"}, 400, "invalid member name"),
    ],
)
def test_bad_requests_are_4xx_with_one_message(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent, body: dict[str, Any], status: int, message: str
) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, csrf = member(portal, "alice")
    r = book(alice, csrf, **body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]["message"]
    assert alice.get("/api/v1/bookings").json() == []


def test_cancelling_a_started_booking_ends_it(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, csrf = member(portal, "alice")
    made = book(alice, csrf, gpus=[2], until="+2h").json()
    r = post(alice, csrf, f"/api/v1/bookings/{made['id']}/cancel")
    assert r.status_code == 200
    done = r.json()
    assert (done["status"], done["ended_early"]) == ("ended", True)
    # No daemon here: the job runner detaches the GPUs later, and the answer says so.
    assert done["detach"].startswith("GPUs not detached from gpu1 yet (cannot reach the LXD/Incus daemon")
    assert datetime.fromisoformat(done["end"]) < datetime.fromisoformat(made["end"])


def test_odd_ids_and_queries(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    boss, csrf = member(portal, "boss", "192.0.2.99")
    assert boss.get("/api/v1/bookings/0").status_code == 422
    assert post(boss, csrf, f"/api/v1/bookings/{2**60}/cancel").status_code == 422
    assert boss.get("/api/v1/bookings?member=al%00ice").status_code == 400
    assert boss.get("/api/v1/bookings?member=alice&all=1").json() == []
    r = post(boss, csrf, "/api/v1/bookings/1/reject", reason="a\x00")
    assert r.status_code == 400 and r.json()["error"]["message"] == "the reason must be printable text"


def test_csrf_and_tokens(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, _csrf = member(portal, "alice")
    r = alice.post("/api/v1/bookings", json={"gpus": 1, "until": "+1h"})
    assert r.status_code == 403 and r.json()["error"]["reason"] == "csrf"
    token = post(alice, _csrf, "/api/v1/tokens", name="script").json()["token"]
    script = portal.client(headers={"Authorization": f"Bearer {token}"})
    r = script.post("/api/v1/bookings", json={"gpus": 1, "until": "+1h"})
    assert r.status_code == 201 and r.json()["member"] == "alice"


def test_a_host_not_in_booked_mode(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal = gpu_portal()
    host_id = add_host(portal, mode="shared", agent_url=gpu_agent.url)
    add_member(portal, "alice", host_id)
    alice, csrf = member(portal, "alice")
    r = book(alice, csrf, gpus=1, until="+1h")
    assert r.status_code == 409
    assert r.json()["error"]["message"] == (
        "host gpu1 is in shared GPU mode (every container has every GPU); bookings need booked mode"
    )
    page = alice.get("/bookings")
    assert page.status_code == 200
    assert "No host is in booked mode" in page.text and "labgpu gpu mode booked" in page.text
    assert 'id="book"' not in page.text


# The board ----------------------------------------------------------------------------------------


def _board_row(html: str, gpu: int) -> str:
    start = html.index(f'id="board-gpu1-{gpu}"')
    return html[start : html.index("</tr>", start)]


def test_book_on_the_board_and_see_it_there(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, _ = member(portal, "alice")
    page = alice.get("/bookings")
    assert page.status_code == 200
    for gpu in range(4):
        assert 'class="free"' in _board_row(page.text, gpu) and "NVIDIA RTX A6000" in _board_row(
            page.text, gpu
        )
    assert (
        'name="gpu" value="3"' in page.text and 'name="member"' not in page.text
    )  # members book for themselves

    csrf = page_token(alice, "/bookings")
    r = alice.post(
        "/bookings",
        data={
            "csrf_token": csrf,
            "count": "1",
            "gpu": ["2"],
            "start": "now",
            "until": "+3h",
            "note": "thesis",
        },
    )
    assert r.status_code == 200, r.text
    assert "was made: GPU 2 on gpu1." in r.text
    row = _board_row(r.text, 2)
    assert 'class="held approved mine"' in row and "alice" in row
    mine = r.text[r.text.index('id="my-bookings"') :]
    assert "thesis" in mine and ">End now<" in mine  # it has started: cancelling ends it

    # Another member sees alice on the board too; booking the same GPU is one sentence on the form.
    bob, _ = member(portal, "bob", "192.0.2.22")
    board = bob.get("/bookings").text
    assert "alice" in _board_row(board, 2) and "mine" not in _board_row(board, 2)
    r = bob.post(
        "/bookings",
        data={"csrf_token": page_token(bob, "/bookings"), "gpu": ["2"], "start": "+1h", "until": "+1h"},
    )
    assert r.status_code == 409
    inline = r.text[r.text.index('id="form-error"') :]
    assert inline[inline.index(">") + 1 : inline.index("</div>")].startswith("GPU 2 is booked by alice from ")
    assert 'value="+1h"' in r.text  # what was typed stays in the form
    r = bob.post("/bookings", data={"csrf_token": page_token(bob, "/bookings"), "count": "", "until": "+1h"})
    assert r.status_code == 400 and "say how many GPUs, or pick them" in r.text


def test_extend_and_cancel_on_the_board(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, csrf = member(portal, "alice")
    made = book(alice, csrf, gpus=[1], **{"from": "+1h"}, until="+2h").json()
    board_csrf = page_token(alice, "/bookings")
    r = alice.post(f"/bookings/{made['id']}/extend", data={"csrf_token": board_csrf, "until": "+1h"})
    assert r.status_code == 200 and f"Booking {made['id']} now ends" in r.text
    r = alice.post(f"/bookings/{made['id']}/extend", data={"csrf_token": board_csrf, "until": "soon"})
    assert r.status_code == 400 and "until: invalid time &#39;soon&#39;" in r.text
    r = alice.post(f"/bookings/{made['id']}/cancel", data={"csrf_token": board_csrf})
    assert r.status_code == 200 and f"Booking {made['id']} was cancelled." in r.text
    assert "No bookings hold GPUs." in r.text


def test_admins_decide_on_the_board(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent, booking_approval=True)
    alice, csrf = member(portal, "alice")
    first = book(alice, csrf, gpus=[0], until="+2h").json()["id"]
    second = book(alice, csrf, gpus=[1], until="+2h").json()["id"]
    assert "waiting for an admin" in _board_row(alice.get("/bookings").text, 0)

    boss, _ = member(portal, "boss", "192.0.2.99")
    page = boss.get("/bookings")
    assert f'id="pending-{first}"' in page.text and 'name="member"' in page.text
    board_csrf = page_token(boss, "/bookings")
    r = boss.post(f"/bookings/{first}/approve", data={"csrf_token": board_csrf})
    assert r.status_code == 200 and f"Booking {first} was approved." in r.text
    r = boss.post(f"/bookings/{second}/reject", data={"csrf_token": board_csrf, "reason": "course"})
    assert r.status_code == 200 and f"Booking {second} was rejected." in r.text
    assert f'id="pending-{second}"' not in r.text
    r = boss.post(f"/bookings/{second}/reject", data={"csrf_token": board_csrf})
    assert r.status_code == 409 and f"booking {second} is rejected, not pending" in r.text
    r = boss.post(
        "/bookings", data={"csrf_token": board_csrf, "count": "1", "until": "+1h", "member": "carol"}
    )
    assert r.status_code == 200 and "was requested" in r.text


def test_a_board_day_and_a_bad_day(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent)
    alice, _ = member(portal, "alice")
    page = alice.get("/bookings?day=2030-01-02")
    assert page.status_code == 200 and "2030-01-02, hours in" in page.text
    assert page.text.count('class="hour"') in (23, 24, 25)
    r = alice.get("/bookings?day=next-week")
    assert r.status_code == 400 and "give a date as YYYY-MM-DD" in r.text


def test_the_board_in_chinese(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = lab(gpu_portal, gpu_agent, booking_approval=True)
    alice, csrf = member(portal, "alice", headers={"Accept-Language": "zh-CN"})
    book(alice, csrf, gpus=[0], until="+2h")
    boss, _ = member(portal, "boss", "192.0.2.99", headers={"Accept-Language": "zh-CN"})
    for client in (alice, boss):
        page = client.get("/bookings")
        assert page.headers["content-language"] == "zh-Hans"
        assert untranslated(page.text) == []
    csrf = page_token(alice, "/bookings")
    r = alice.post("/bookings", data={"csrf_token": csrf, "gpu": ["1"], "until": "+2h"})
    assert untranslated(r.text) == [] and "已申请" in r.text
