"""Names, paths, keys and texts from users cannot inject: not into a host path (``..``), not into raw.idmap
or an authorized_keys line (newlines, options), not into a shell or a daemon URL (metacharacters).

Each hostile value is sent the way a person would send it: through the JSON API and the forms of the
portal (the ``portal`` fixture, no daemon needed; for GPU bookings the ``gpu_portal`` of tests/web/gpus,
whose GPUs come from a served `labgpu agent`) and through the ``labgpu`` command (in process, no
daemon). What is asserted is what they would notice: a clear 4xx with a JSON error (or exit code 2 and
one ``error:`` line), and nothing stored, no folder made.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from labgpu.cli.main import run
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.members import _shares as shares
from labgpu.services.members._keys import list_keys
from labgpu.services.portal import _applications as applications
from labgpu.services.portal import _audit as audit
from labgpu.store.models import Role
from tests.web.conftest import Portal, csrf_from, login, page_token
from tests.web.gpus.helpers import PortalFactory, ServedAgent
from tests.web.gpus.helpers import lab as gpu_lab

# Member names are Linux user names, LXD instance names and folder names under home_base at once.
HOSTILE_NAMES = [
    "../etc",
    "..",
    "alice/../bob",
    "alice\nbob",
    "alice\nboth 0 0",
    "a;reboot",
    "a|sh",
    "$(id)",
    "`id`",
    "a b",
    "ALICE",
    "al\x00ice",
    "-rf",
    "root",
    "x" * 40,
    "ąlice",
]
HOSTILE_SHARE_NAMES = ["../x", "a b", "Cuda", "x;y", "cuda\n", "cuda/../../etc", "$(id)", ""]
HOSTILE_SNAPSHOTS = ["../x", "a b", "x;reboot", "$(id)", "snap\nx", "-rf", ".hidden", "a/b", "x" * 80]
# GPU bookings: a member's note (one line, shown on the board and to admins), the typed times, and an
# admin's reason for a rejection (mailed to the member, in the audit log).
HOSTILE_NOTES = [
    "a\nb",
    "a\rb",
    "a\tb",
    "a\x00b",
    "\x1b[31mred",
    "\x1b]0;pwned\x07",
    "x\u2028y",
    "\u202eevil",
    "x" * 256,
]
HOSTILE_TIMES = [
    "+1h; reboot",
    "$(date)",
    "`id`",
    "+1h|sh",
    "+1h\n+2h",
    "now\r\nX-Injected: 1",
    "+1h\x00",
    "\x00",
    "../../etc",
    "+-1h",
    "{{7*7}}",
    "%s%n",
    "9999-99-99",
    "+99999999999w",
    "1" * 100,
]
HOSTILE_REASONS = [
    "\x1b]0;pwned\x07",
    "a\x00b",
    "\u202eevil",
    "approved\rrejected",  # a lone CR overwrites the line on a terminal
    "a\x0bb",
    "a\x0cb",
    "a\x1cb",
    "a\x85b",
    "a\u2028b",
    "x" * 2001,
]
HOSTILE_AGENT_URLS = [
    "file:///etc/passwd",
    "http://u:pw@gpu2:9410",
    "http://gpu2:9410/?token=x",
    "http://gpu2\n.evil:9410",
    "http://gpu2:9410/a b",
    "http://gpu2\x1b[31m:9410",
    "http://$(id):9410",
    "http://gpu2;reboot:9410",
]


def _public_key(comment: str = "alice@laptop") -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{raw} {comment}"


def _hostile_keys() -> list[str]:
    good = _public_key()
    kind, blob, _ = good.split(" ", 2)
    other = base64.b64encode(b"\x00\x00\x00\x07ssh-rsa" + b"\x00" * 20).decode()
    return [
        f'command="/bin/sh" {good}',  # an authorized_keys option in front of the key
        f"no-pty,{good}",
        f'{good}\ncommand="sh" {kind} {blob}',
        f"{kind} {blob} me\rcommand=sh",  # control characters in the comment
        f"{kind} {blob} me\x1b[31m",
        f"{kind} $(id)",
        f"{kind} {blob}; reboot",
        f"ssh-rsa {blob}",  # the blob says ed25519
        f"ssh-ed25519 {other}",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "",
    ]


def _one_line_error(response: httpx.Response, *statuses: int) -> str:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["reason"] in ("bad-input", "invalid-request", "weak-password", "not-found"), error
    assert error["message"] and "Traceback" not in error["message"]
    return str(error["message"])


def _logged_in(portal: Portal, name: str, role: Role = Role.MEMBER) -> tuple[TestClient, dict[str, str]]:
    portal.add_account(name, role=role)
    client = portal.client(f"192.0.2.{50 + len(name)}")
    assert login(client, name).status_code == 303
    return client, {"X-CSRF-Token": page_token(client)}


# The portal ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_member_names_in_an_application_are_refused(portal: Portal, name: str) -> None:
    api = portal.client("198.51.100.60")
    body = {"name": name, "email": "a@lab.test", "password": "quiet-walnut-58-harbor"}
    message = _one_line_error(api.post("/api/v1/applications", json=body), 400, 422)
    assert "name" in message
    form = portal.client("198.51.100.61")
    token = csrf_from(form.get("/apply").text)
    r = form.post("/apply", data={**body, "confirm_password": body["password"], "csrf_token": token})
    assert r.status_code in (400, 422)
    assert applications.list_applications(portal.svc) == []


def test_an_application_with_control_characters_in_its_texts_is_refused(portal: Portal) -> None:
    api = portal.client("198.51.100.62")
    for field in ("supervisor", "group_name", "reason"):
        body = {
            "name": "carol",
            "email": "c@lab.test",
            "password": "quiet-walnut-58-harbor",
            field: "Prof. X\x1b]0;pwned\x07",
        }
        message = _one_line_error(api.post("/api/v1/applications", json=body), 400, 422)
        assert "control characters" in message
    assert applications.list_applications(portal.svc) == []


def test_hostile_shares_are_refused_and_nothing_is_recorded(portal: Portal, tmp_path: Path) -> None:
    admin, headers = _logged_in(portal, "boss", Role.ADMIN)
    data = tmp_path / "datasets"
    data.mkdir()
    (tmp_path / "to-etc").symlink_to("/etc")
    settings = portal.settings
    cases: list[dict[str, Any]] = [
        *({"name": n, "source": str(data), "path": "/data"} for n in HOSTILE_SHARE_NAMES),
        *(
            {"name": "data", "source": s, "path": "/data"}
            for s in (
                "/etc",
                "/",
                f"{data}/../../../../etc",
                "datasets",
                f"{data}\n",
                str(tmp_path / "to-etc"),  # a symbolic link to /etc
                str(settings.state_dir),
                str(settings.home_base / "alice"),
                "/var/lib/lxd",
            )
        ),
        *(
            {"name": "data", "source": str(data), "path": p}
            for p in ("/etc/ssh", "/", "data", "/data/../etc", "/home/ubuntu", "/proc/x", "/data\nx", "/usr")
        ),
    ]
    for case in cases:
        r = admin.post("/api/v1/shares", json=case, headers=headers)
        _one_line_error(r, 400, 422)
    assert shares.list_shares(portal.svc) == []
    # The same admin, the same request with sane values: recorded (the refusals above were not blanket).
    r = admin.post(
        "/api/v1/shares", json={"name": "data", "source": str(data), "path": "/data"}, headers=headers
    )
    assert r.status_code == 201, r.text
    assert [s.source for s in shares.list_shares(portal.svc)] == [str(data)]


@pytest.mark.parametrize("snapshot", HOSTILE_SNAPSHOTS)
def test_hostile_snapshot_names_are_refused_before_the_daemon_is_asked(portal: Portal, snapshot: str) -> None:
    client, headers = _logged_in(portal, "alice")
    r = client.post("/api/v1/members/alice/snapshots", json={"name": snapshot}, headers=headers)
    assert "name" in _one_line_error(r, 400, 422)
    for method, suffix in (("POST", "/restore"), ("DELETE", "")):
        url = "/api/v1/members/alice/snapshots/" + quote(snapshot, safe="")
        r = client.request(method, url + suffix, headers=headers)
        # "a/b" and ".." change the route (404 before any code runs); anything else is refused by name.
        assert r.status_code in (400, 404, 405, 422), (snapshot, r.status_code)
        if r.status_code == 400:
            assert "invalid snapshot name" in r.json()["error"]["message"]
    # The form a member uses: the same answer, in HTML.
    r = client.post("/me/snapshots", data={"name": snapshot, "csrf_token": headers["X-CSRF-Token"]})
    assert r.status_code in (400, 422) and "name" in r.text


# Members' own templates: the label becomes part of an image alias (member/NAME/LABEL); the description a
# property of the image; the template a reset is given is looked up, never taken as it is.
HOSTILE_TEMPLATE_LABELS = [
    "../x",
    "a b",
    "A",
    "x;reboot",
    "$(id)",
    "a/b",
    "x\ny",
    "x\x00y",
    "-rf",
    "",
    "x" * 41,
]


def test_hostile_template_labels_descriptions_and_references_are_refused(portal: Portal) -> None:
    client, headers = _logged_in(portal, "alice")
    before = {e.id for e in audit.list_events(portal.svc, limit=1000)}
    for label in HOSTILE_TEMPLATE_LABELS:
        r = client.post("/api/v1/members/alice/templates", json={"label": label}, headers=headers)
        _one_line_error(r, 400, 422)
        r = client.post("/me/templates", data={"label": label, "csrf_token": headers["X-CSRF-Token"]})
        assert r.status_code in (400, 422), (label, r.status_code)
        r = client.delete("/api/v1/members/alice/templates/" + quote(label, safe=""), headers=headers)
        assert r.status_code in (400, 404, 405, 422), (label, r.status_code)
        r = client.post("/me/templates/delete", data={"label": label, "csrf_token": headers["X-CSRF-Token"]})
        assert r.status_code in (400, 422), (label, r.status_code)
    for body in (
        {"label": "ok", "description": "two\nlines"},
        {"label": "ok", "description": "x" * 256},
        {"label": "ok", "snapshot": "../x"},
        {"label": "ok", "snapshot": "a b"},
    ):
        r = client.post("/api/v1/members/alice/templates", json=body, headers=headers)
        _one_line_error(r, 400, 422)
    for template in ("member/alice/../x", "member/alice/a\x00b", "member/bob/x", "member/alice/nothing"):
        r = client.post(
            "/api/v1/members/alice/reset", json={"confirm": "alice", "template": template}, headers=headers
        )
        # Not of the form member/NAME/LABEL: another template, which only an admin may choose (403).
        assert r.status_code in (400, 403) and "template" in r.json()["error"]["message"], template
    assert client.get("/api/v1/members/alice/templates").json() == []
    assert [e for e in audit.list_events(portal.svc, limit=1000) if e.id not in before] == []


def test_hostile_ssh_keys_are_refused_and_nothing_is_stored(portal: Portal) -> None:
    client, headers = _logged_in(portal, "alice")
    for key in _hostile_keys():
        r = client.post("/api/v1/members/alice/keys", json={"key": key}, headers=headers)
        _one_line_error(r, 400, 422)
        r = client.post("/me/keys", data={"key": key, "csrf_token": headers["X-CSRF-Token"]})
        assert r.status_code in (400, 422), key
    assert client.get("/api/v1/members/alice/keys").json() == []
    assert list_keys(portal.svc, "alice") == []


# Names of the member's guide's pages (/help/{page}): looked up in the guide's own list, never joined to a
# path. What a traversal, an encoded separator or a file of the package gets is the guide's 404.
HOSTILE_GUIDE_PAGES = [
    "..",
    "../../pyproject.toml",
    "..\\..\\etc\\passwd",
    "/etc/passwd",
    "zh/../../__init__.py",
    "__init__.py",
    "connecting.md",
    "README",
    "pages",
    "connecting\x00",
    "connecting\n",
    "$(id)",
    "<script>alert(1)</script>",
    "x" * 70,
]


def test_hostile_guide_page_names_find_no_file(portal: Portal) -> None:
    client, _ = _logged_in(portal, "alice")
    for name in HOSTILE_GUIDE_PAGES:
        # Every byte percent-encoded, so that no client folds a ".." away before the portal sees it.
        r = client.get("/help/" + "".join(f"%{byte:02X}" for byte in name.encode()))
        assert r.status_code in (404, 422), (name, r.status_code)
        assert "<script>alert(1)" not in r.text and "[project]" not in r.text and "import" not in r.text
        if r.status_code == 404:
            assert "no such page" in r.text, name


def test_hostile_templates_in_an_approval_are_refused(portal: Portal) -> None:
    admin, headers = _logged_in(portal, "boss", Role.ADMIN)
    app = applications.submit(portal.svc, name="dave", email="d@lab.test", password="quiet-walnut-58-harbor")
    for template in ("x\ny", "a b", "x\x00", "x\x1b[2J", "t" * 300):
        r = admin.post(f"/api/v1/applications/{app.id}/approve", json={"template": template}, headers=headers)
        assert "template" in _one_line_error(r, 400, 422)
    assert applications.get_application(portal.svc, app.id).status == "pending"


def test_hostile_booking_notes_times_and_members_are_refused(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent
) -> None:
    portal, _ = gpu_lab(gpu_portal, gpu_agent)
    alice = portal.client("192.0.2.60")
    assert login(alice, "alice").status_code == 303
    headers = {"X-CSRF-Token": page_token(alice)}
    token = page_token(alice, "/bookings")
    for note in HOSTILE_NOTES:
        r = alice.post("/api/v1/bookings", json={"gpus": 1, "until": "+1h", "note": note}, headers=headers)
        assert "note" in _one_line_error(r, 400, 422), note
        form = {"count": "1", "until": "+1h", "note": note, "csrf_token": token}
        assert alice.post("/bookings", data=form).status_code in (400, 422), note
    for time in HOSTILE_TIMES:
        for field, form_field in (("from", "start"), ("until", "until")):
            body = {"gpus": 1, "from": "now", "until": "+1h", field: time}
            assert field in _one_line_error(
                alice.post("/api/v1/bookings", json=body, headers=headers), 400, 422
            )
            form = {"count": "1", "start": "now", "until": "+1h", form_field: time, "csrf_token": token}
            assert alice.post("/bookings", data=form).status_code in (400, 422), (field, time)
    boss = portal.client("192.0.2.61")
    assert login(boss, "boss").status_code == 303
    admin_headers = {"X-CSRF-Token": page_token(boss)}
    for name in HOSTILE_NAMES:
        body = {"gpus": 1, "until": "+1h", "member": name}
        assert "name" in _one_line_error(
            boss.post("/api/v1/bookings", json=body, headers=admin_headers), 400, 422
        )
    assert bookings.list_bookings(portal.svc, include_all=True) == []
    assert audit.list_events(portal.svc, action="booking.", limit=10) == []

    # A sane booking (the refusals above were not blanket): its end is then safe from hostile times too.
    made = alice.post("/api/v1/bookings", json={"gpus": 1, "until": "+1h", "note": "thesis"}, headers=headers)
    assert made.status_code == 201, made.text
    booking = made.json()
    for time in HOSTILE_TIMES:
        r = alice.post(f"/api/v1/bookings/{booking['id']}/extend", json={"until": time}, headers=headers)
        assert "until" in _one_line_error(r, 400, 422)
        r = alice.post(f"/bookings/{booking['id']}/extend", data={"until": time, "csrf_token": token})
        assert r.status_code in (400, 422), time
    assert bookings.get_booking(portal.svc, booking["id"]).end.isoformat() == booking["end"].replace(
        "Z", "+00:00"
    )


def test_hostile_rejection_reasons_are_refused(gpu_portal: PortalFactory, gpu_agent: ServedAgent) -> None:
    portal, _ = gpu_lab(gpu_portal, gpu_agent, booking_approval=True)
    alice = portal.client("192.0.2.62")
    assert login(alice, "alice").status_code == 303
    made = alice.post(
        "/api/v1/bookings", json={"gpus": 1, "until": "+1h"}, headers={"X-CSRF-Token": page_token(alice)}
    )
    assert made.json()["status"] == "pending", made.text
    booking = made.json()["id"]
    boss = portal.client("192.0.2.63")
    assert login(boss, "boss").status_code == 303
    headers = {"X-CSRF-Token": page_token(boss)}
    token = page_token(boss, "/bookings")
    for reason in HOSTILE_REASONS:
        r = boss.post(f"/api/v1/bookings/{booking}/reject", json={"reason": reason}, headers=headers)
        assert "reason" in _one_line_error(r, 400, 422), reason
        r = boss.post(f"/bookings/{booking}/reject", data={"reason": reason, "csrf_token": token})
        assert r.status_code in (400, 422), reason
    assert bookings.get_booking(portal.svc, booking).status == "pending"
    assert audit.list_events(portal.svc, action="booking.reject", limit=10) == []
    # Lines ended as a browser's textarea ends them are text: stored with plain newlines.
    r = boss.post(f"/api/v1/bookings/{booking}/reject", json={"reason": "course\r\nweek 3"}, headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "rejected", r.text
    [event] = audit.list_events(portal.svc, action="booking.reject", limit=10)
    assert event.detail["reason"] == "course\nweek 3"


# The terminal in the browser: a name in its URL, the window size in its query, and what the browser sends
# on the open WebSocket (keystrokes go to the pty as they are: that is the point; controls are parsed).
HOSTILE_SIZES = ["0", "-1", "1e3", "80;reboot", "$(id)", "99999", "1001", "", " 80", "8\n0", "0x50", "٨٠"]


def test_hostile_names_and_sizes_on_the_terminal_are_refused_before_the_daemon_is_asked(
    portal: Portal,
) -> None:
    from starlette.testclient import WebSocketDenialResponse
    from starlette.websockets import WebSocketDisconnect

    admin, _ = _logged_in(portal, "boss", Role.ADMIN)
    origin = {"origin": "http://testserver"}
    for name in HOSTILE_NAMES:
        segment = quote(name, safe="")
        page = admin.get(f"/terminal/{segment}", follow_redirects=False)
        assert page.status_code in (404, 422) or name == "..", (
            name,
            page.status_code,
        )  # "/terminal/.." is "/"
        # An admin passes the access check, so the name reaches the service, which finds no such member;
        # a name with a slash matches no route at all (closed before the handshake completes).
        with pytest.raises((WebSocketDenialResponse, WebSocketDisconnect)) as refused:
            admin.websocket_connect(f"/terminal/{segment}/ws", headers=origin).__enter__()
        if isinstance(refused.value, WebSocketDenialResponse):
            assert refused.value.status_code == 404, (name, refused.value.status_code)
            assert refused.value.json()["error"]["reason"] == "not-found"
        else:
            assert "/" in name or name == "..", name
    portal.add_account("alice")
    for size in HOSTILE_SIZES:
        with pytest.raises(WebSocketDenialResponse) as refused:
            admin.websocket_connect(
                f"/terminal/alice/ws?cols={quote(size)}&rows=24", headers=origin
            ).__enter__()
        assert refused.value.status_code == 400, (size, refused.value.status_code)
        assert refused.value.json()["error"]["message"] == "the terminal size is not valid"
    assert audit.list_events(portal.svc, action="member.terminal", limit=10) == []  # nothing was opened


def test_hostile_terminal_controls_are_ignored() -> None:
    from labgpu.services.members._terminal_bridge import _control

    assert _control('{"type": "resize", "cols": 120, "rows": 40}') == (120, 40)
    for text in [
        "",
        "resize",
        "[]",
        '{"type": "resize"}',
        '{"type": "resize", "cols": "120", "rows": 40}',
        '{"type": "resize", "cols": 1.5, "rows": 40}',
        '{"type": "resize", "cols": true, "rows": 40}',
        '{"type": "resize", "cols": -1, "rows": 40}',
        '{"type": "resize", "cols": 0, "rows": 0}',
        '{"type": "signal", "signal": 9}',
        '{"command": "window-resize", "args": {"width": "1", "height": "1"}}',
        '{"type": "resize", "cols": 1e400, "rows": 40}',
        "\x00",
    ]:
        assert _control(text) is None, text
    # Sizes past the pty's bounds are clamped before the daemon sees them, never refused there.
    from labgpu.runtime.terminal import clamp_size

    assert clamp_size(10**9, 10**9) == (1000, 500)


def test_names_reach_the_daemon_as_one_escaped_path_segment() -> None:
    """What a validator might let through still cannot walk the daemon's REST API: every name is quoted."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    client = RuntimeClient(Endpoint.unix(Path("/nonexistent.sock")))
    client._http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://runtime")
    assert client.images.resolve_alias("../../instances/victim?recursion=1") is None
    assert client.instances.exists("../victim") is False
    assert seen == [
        "/1.0/images/aliases/..%2F..%2Finstances%2Fvictim%3Frecursion%3D1",
        "/1.0/instances/..%2Fvictim",
    ]


# The command line --------------------------------------------------------------------------------------


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings for `labgpu` in process: a private SQLite store and homes, a daemon that is not there (so a
    command that got past validation would fail differently: exit 1, "cannot reach")."""
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABGPU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LABGPU_HOME_BASE", str(tmp_path / "home"))
    monkeypatch.setenv("LABGPU_RUNTIME_URL", "unix:///nonexistent.sock")
    return tmp_path


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    capsys.readouterr()
    code = run(list(argv))
    out = capsys.readouterr()
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, (argv, code, out.err)
    assert lines and lines[0].startswith("error:") and "Traceback" not in out.err, out.err
    return lines[0]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_cli_refuses_hostile_member_names_and_makes_nothing(
    offline: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    assert "name" in _refused(capsys, "member", "add", "--", name)
    assert not (offline / "home").exists() or list((offline / "home").iterdir()) == []
    monkeypatch.setattr("sys.stdin", io.StringIO("quiet-walnut-58-harbor\n"))
    assert "name" in _refused(capsys, "admin", "create", "--password-stdin", "--", name)


def test_cli_refuses_hostile_shares_snapshots_templates_and_keys(
    offline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = offline / "data"
    data.mkdir()
    for name in HOSTILE_SHARE_NAMES:
        _refused(capsys, "share", "add", name, str(data), "/data")
    for source in ("/etc", f"{data}/../../etc", "relative", "/"):
        _refused(capsys, "share", "add", "data", source, "/data")
    for path in ("/etc/ssh", "../data", "/home/ubuntu"):
        _refused(capsys, "share", "add", "data", str(data), path)
    for snapshot in HOSTILE_SNAPSHOTS:
        assert "invalid snapshot name" in _refused(capsys, "member", "snapshot", "--", "alice", snapshot)
    for template in ("x y", "x\ny", "x\x07"):
        assert "template" in _refused(capsys, "member", "add", "alice", "--template", template)
    for label in HOSTILE_TEMPLATE_LABELS:
        assert "label" in _refused(capsys, "member", "template", "save", "alice", "--label", label)
        _refused(capsys, "member", "template", "rm", "alice", "--yes", "--", label)
    assert "member's own template" in _refused(
        capsys, "member", "add", "alice", "--template", "member/alice/x"
    )
    for url in HOSTILE_AGENT_URLS:
        assert "invalid agent URL" in _refused(capsys, "host", "set", "gpu1", "--agent-url", url)
    for i, key in enumerate(k for k in _hostile_keys() if k):
        path = offline / f"key{i}.pub"
        path.write_text(key)
        _refused(capsys, "member", "add", "alice", "--ssh-key", str(path))
    # Nothing of it was recorded, nothing made on the host.
    capsys.readouterr()
    assert run(["share", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not (offline / "home").exists() or list((offline / "home").iterdir()) == []


# Web apps and files (issue 16) ----------------------------------------------------------------------------

HOSTILE_PATHS = ["..", "../x", "a/../../etc", "a/..", "a\nb", "a\\b", "x\x00y", "\x1b[2J", "x" * 300 + "/y"]
HOSTILE_FILE_NAMES = ["..", ".", "a/b", "../x", "a\nb", "a\\b", "x\x00", ""]
HOSTILE_APPS = ["../x", "A", "a b", "x;y", "$(id)", "jupyterlab/../x", "x" * 40]


def test_hostile_file_paths_and_app_names_are_refused_before_the_daemon_is_asked(portal: Portal) -> None:
    """Paths of the home's files never leave the home (no ``..``, control characters or backslashes), and app
    names are one route segment: refused with a 4xx, nothing written, no audit row claims an upload."""
    client, headers = _logged_in(portal, "alice")
    before = {e.id for e in audit.list_events(portal.svc, limit=1000)}
    for path in HOSTILE_PATHS:
        for url in ("/members/alice/files", "/members/alice/files/download"):
            r = client.get(url, params={"path": path})
            assert r.status_code in (400, 422), (url, path, r.status_code)
        r = client.put(
            "/members/alice/files/upload",
            params={"path": path, "filename": "ok.txt"},
            content=b"data",
            headers=headers,
        )
        assert r.status_code in (400, 422), (path, r.status_code)
    for name in HOSTILE_FILE_NAMES:
        r = client.put(
            "/members/alice/files/upload",
            params={"path": "", "filename": name},
            content=b"x",
            headers=headers,
        )
        assert r.status_code in (400, 422), (name, r.status_code)
    for app in HOSTILE_APPS:
        r = client.post(
            f"/members/alice/apps/{quote(app, safe='')}/open", data={"csrf_token": headers["X-CSRF-Token"]}
        )
        assert r.status_code in (404, 405, 422), (app, r.status_code)
    new = [e.action for e in audit.list_events(portal.svc, limit=1000) if e.id not in before]
    assert not [a for a in new if a.startswith(("files.", "app."))], new


# Two-factor log-in (TOTP) -----------------------------------------------------------------------------

HOSTILE_CODES = [
    "$(id)",
    "123456; reboot",
    "123456\n",
    "12345\x00",
    "\x1b[31m123456",
    "' OR 1=1 --",
    "١٢٣٤٥٦",  # Arabic-Indic digits: isdigit() says yes, a code they are not
    "１２３４５６",  # full-width digits
    "abcde-fghjk\r\n",
    "%s%n",
    "{{7*7}}",
    "",
    "9" * 64,
    "9" * 65,  # longer than the field takes
]
HOSTILE_NEXT = ["//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"]


def test_hostile_codes_and_redirects_in_two_factor_log_in_are_refused(portal: Portal) -> None:
    from tests.web.test_totp import code, enable_totp, second_step

    portal.add_account("alice")
    secret = enable_totp(portal, "alice")
    # Setting up (a set-up in progress on another member's account): nothing turns on.
    bob, _ = _logged_in(portal, "bob")
    started = bob.post("/account/totp/setup", data={"csrf_token": page_token(bob, "/account/totp")})
    assert started.status_code == 200
    for typed in HOSTILE_CODES:
        r = bob.post("/account/totp/confirm", data={"code": typed, "csrf_token": page_token(bob)})
        assert r.status_code in (401, 422, 429), (typed, r.status_code)  # 429: wrong codes are throttled
        assert "Traceback" not in r.text
    assert "totp-setup-card" in bob.get("/account/totp").text  # still waiting for a right code

    # Logging in: every hostile code is refused by the code step, and no session is made. (Wrong codes
    # count for the throttle; it is emptied before each try, so that each reaches the code check.)
    from sqlalchemy import delete

    from labgpu.store.models import LoginAttempt

    for i, typed in enumerate(HOSTILE_CODES):
        with portal.svc.session() as s:
            s.execute(delete(LoginAttempt))
        client = portal.client(f"198.51.100.{120 + i}")
        assert login(client, "alice").status_code == 303
        r = second_step(client, typed)
        assert r.status_code in (401, 422), (typed, r.status_code)  # type: ignore[attr-defined]
        assert client.get("/api/v1/me").status_code == 401
    # A hostile `next`: the code logs in, the redirect stays on this site.
    with portal.svc.session() as s:
        s.execute(delete(LoginAttempt))
    for target in HOSTILE_NEXT[:1]:  # one code per step: the first hostile target is enough here
        client = portal.client("198.51.100.150")
        assert login(client, "alice", next=target).headers["location"].startswith("/login/totp?next=")
        page = client.get("/login/totp", params={"next": target})
        r = client.post(
            "/login/totp",
            data={"code": code(secret, 0), "next": target, "csrf_token": csrf_from(page.text)},
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == "/me", r.headers.get("location")
    for target in HOSTILE_NEXT:
        page = portal.client("198.51.100.160").get("/login/totp", params={"next": target})
        assert page.status_code in (200, 303) and "evil.example" not in page.headers.get("location", "")


# Sign-on --------------------------------------------------------------------------------------------------


def test_hostile_input_at_sign_on_is_refused_and_nothing_is_stored(make_portal: Any) -> None:
    """Hostile names in the sign-on application, hostile provider names in the paths, hostile CAS tickets
    and OIDC answers: a 4xx, no application, no identity, no session. (LDAP filter injection in the
    log-in name is refused against a real directory in tests/web/test_signon.py.)"""
    from sqlalchemy import func, select

    from labgpu.store.models import Application
    from labgpu.store.models_signon import SignOnIdentity
    from labgpu.web.routes.portal.signon import CLAIMS_COOKIE
    from labgpu.web.security import SESSION_COOKIE
    from tests.web.conftest import signed_claims

    p = make_portal(cas_url="http://127.0.0.1:9/cas")
    client = p.client()
    client.cookies.set(CLAIMS_COOKIE, signed_claims(p.app, name="alice"), domain="testserver.local")
    token = csrf_from(client.get("/signon/apply").text)
    for name in HOSTILE_NAMES:
        r = client.post("/signon/apply", data={"name": name, "email": "a@lab.test", "csrf_token": token})
        assert 400 <= r.status_code < 500, (name, r.status_code)
    for email in ("a@lab.test\x00", "a@lab.test\nBcc: x@evil.test"):
        r = client.post("/signon/apply", data={"name": "alice", "email": email, "csrf_token": token})
        assert 400 <= r.status_code < 500, (email, r.status_code)
    # Claims the browser changed: the seal breaks, the form is not even shown.
    forged = client.cookies.get(CLAIMS_COOKIE, domain="testserver.local") or ""
    evil = p.client()
    evil.cookies.set(CLAIMS_COOKIE, "e30" + forged[3:], domain="testserver.local")
    assert evil.get("/signon/apply", follow_redirects=False).headers["location"] == "/login"
    for provider in ("%2e%2e", "%2e%2e%2fetc", "x;id", "a%0ab", "$(id)", "x" * 200):
        r = client.get(f"/login/oidc/{provider}", follow_redirects=False)
        assert r.status_code == 404, (provider, r.status_code)
        r = client.get(f"/login/oidc/{provider}/callback?state=x&code=y", follow_redirects=False)
        assert 400 <= r.status_code < 500, (provider, r.status_code)
    # Malformed tickets are refused before the (unreachable) CAS server is asked: 401, not 503.
    start = client.get("/login/cas", follow_redirects=False)
    state = start.headers["location"].split("state%3D", 1)[1]
    for ticket in ("", "../x", "ST-\n1<x>é", "ST-" + "x" * 300, "PGT-1"):
        r = client.get(
            "/login/cas/callback", params={"state": state, "ticket": ticket}, follow_redirects=False
        )
        assert r.status_code == 401, (ticket, r.status_code)
        client.cookies.set(
            "labgpu_signon_flow", start.cookies["labgpu_signon_flow"], domain="testserver.local"
        )
    # Refused answers count like failed log-ins: the address is throttled (login_max_failures_per_account).
    r = client.get("/login/cas/callback", params={"state": state, "ticket": "ST-1"}, follow_redirects=False)
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert SESSION_COOKIE not in client.cookies
    with p.svc.session() as session:
        assert session.scalar(select(func.count()).select_from(Application)) == 0
        assert session.scalar(select(func.count()).select_from(SignOnIdentity)) == 0
