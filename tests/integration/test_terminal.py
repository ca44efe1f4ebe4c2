"""The terminal in the browser against a real LXD and Incus: the portal (uvicorn, in a thread) bridges a
WebSocket to the daemon's interactive exec in a member's real container.

One test per daemon walks everything a person would notice: the member's shell runs as the container user
in its home (a file it writes appears in the member's home folder on the host), the window size follows a
resize, another member, a visitor, another origin and no origin get nothing, an admin opens it too, every
open is in the audit log, logging out closes the terminal at once, disabling the account (from another
process, as the CLI does) closes it within the recheck time, an idle terminal closes, and a closed terminal
leaves no shell behind in the container."""

from __future__ import annotations

import contextlib
import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _audit as audit
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.terminalutil import CSRF_RE, login, open_ws, read_until, serve, shells_left

pytestmark = pytest.mark.integration
PASSWORD = "plum-tractor-71-orbit"


def _refused(url: str, name: str, client: object, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(url, name, client, **kwargs)  # type: ignore[arg-type]
    return int(refused.value.response.status_code)


def _close_code(ws: object, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=deadline - time.monotonic())  # type: ignore[attr-defined]
        except ConnectionClosed as closed:
            assert closed.rcvd is not None, "closed without a close frame"
            return int(closed.rcvd.code)
        except TimeoutError:
            break
    raise AssertionError("the terminal stayed open")


def test_a_members_terminal_through_the_portal(labgpu_env: LabgpuEnv) -> None:
    labgpu_env.overrides.update(
        trusted_proxies="", jobs_in_serve="false", terminal_idle_minutes="0.1", terminal_recheck_seconds="0.5"
    )
    svc = labgpu_env.services()
    name, other, admin = unique_name("tm"), unique_name("to"), unique_name("ta")
    add_member(svc, validate_request(svc, name=name, gpus="none"), wait_ssh=False)
    accounts.set_password(svc, name=name, password=PASSWORD)
    accounts.create_account(svc, name=other, password=PASSWORD, role=Role.MEMBER)
    accounts.create_account(svc, name=admin, password=PASSWORD, role=Role.ADMIN)
    home = svc.settings.home_base / name
    app = create_app(labgpu_env.settings(), services=svc, background=False)

    with serve(app) as url, contextlib.ExitStack() as stack:
        member = login(url, name, PASSWORD)
        assert member.get(f"/terminal/{name}").status_code == 200
        ws = stack.enter_context(open_ws(url, name, member, cols=100, rows=30))
        # Keystrokes are not compressed: deflating a byte or two buys nothing and costs every echo time.
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        ws.send(f"echo made-by-$(id -un) > ~/{name}/from-terminal; stty size; pwd\n".encode())
        shown = read_until(ws, b"/home/ubuntu\r\n")
        assert b"30 100" in shown
        assert (home / "from-terminal").read_text() == "made-by-ubuntu\n"  # from outside: the host's folder
        ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        ws.send(b"stty size\n")
        read_until(ws, b"40 120")
        ws.send("echo 你好-$LANG\n".encode())
        read_until(ws, "你好-C.UTF-8".encode())

        # Nobody else gets anything: not another member, not a visitor, not a page of another origin (another
        # port on the same host) or a client without Origin, even with the member's own cookies.
        bob = login(url, other, PASSWORD)
        assert bob.get(f"/terminal/{name}").status_code == 404
        assert bob.get("/terminal/nobody-here").status_code == 404
        assert member.get(f"/terminal/{other}").status_code == 404
        visitor_page = httpx.get(f"{url}/terminal/{name}", follow_redirects=False)
        assert visitor_page.status_code == 303 and visitor_page.headers["location"].startswith("/login")
        assert _refused(url, name, bob) == 404
        assert _refused(url, name, None) == 401
        assert _refused(url, name, member, origin="http://127.0.0.1:1") == 403
        assert _refused(url, name, member, origin=None) == 403
        assert _refused(url, name, member, cols=0) == 400

        # An admin opens the member's terminal too; both opens are in the audit log, with who and from where.
        boss = login(url, admin, PASSWORD)
        assert f'href="/terminal/{name}"' in boss.get(f"/admin/members/{name}").text  # its Terminal button
        ws_admin = stack.enter_context(open_ws(url, name, boss))
        ws_admin.send(b"echo admin-$(id -un)\n")
        read_until(ws_admin, b"admin-ubuntu")
        opens = [e for e in audit.list_events(svc, limit=100) if e.action == "member.terminal"]
        assert sorted(e.actor for e in opens) == sorted([name, admin])
        assert {e.target for e in opens} == {name} and all(e.source_address == "127.0.0.1" for e in opens)

        # Logging out closes the member's terminal at once; the admin's stays.
        token = CSRF_RE.search(member.get("/me").text)
        assert token is not None
        member.post("/logout", data={"csrf_token": token.group(1)})
        assert _close_code(ws, timeout=5) == 4001
        ws_admin.send(b"echo still-here\n")
        read_until(ws_admin, b"still-here")

        # Disabling the account elsewhere (the CLI: another process, another registry) closes it too.
        member = login(url, name, PASSWORD)
        ws = stack.enter_context(open_ws(url, name, member))
        read_until(ws, b"$ ")
        accounts.set_disabled(svc, name, disabled=True)
        assert _close_code(ws) == 4001

        # The admin's terminal, left alone, closes as idle.
        assert _close_code(ws_admin, timeout=30) == 4000

    # No shell is left behind in the container.
    assert shells_left(svc.runtime, name, timeout=15) == []
