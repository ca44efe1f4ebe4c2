"""Secrets never reach the logs: passwords (right and wrong ones), personal API tokens, session cookies and
the secret key, whatever the log level.

The portal runs under a real uvicorn server (as `labgpu serve` runs it, access log on) with every logger
at DEBUG, SQLAlchemy's statement log included, and the flows that carry secrets go over HTTP: applying
with a password, logging in (and failing to), changing the password, making and using API tokens; then
`labgpu admin create/passwd` on the command line. Every record captured is then searched for each secret.
The portal's agent token too: the GPU pages and bookings send it to the hosts' `labgpu agent` (one of
which, with another token, refuses it).
"""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from labgpu.cli.main import run
from labgpu.web.app import create_app
from labgpu.web.security import SESSION_COOKIE
from tests.web.conftest import PASSWORD, Portal, csrf_from
from tests.web.gpus.helpers import AGENT_TOKEN, PortalFactory, ServedAgent, add_host, serve_agent
from tests.web.gpus.helpers import lab as gpu_lab

APPLICANT_PASSWORD = "velvet-comet-93-lantern"
FORM_APPLICANT_PASSWORD = "amber-falcon-27-meadow"
WRONG_PASSWORD = "mistyped-secret-guess-77"
NEW_PASSWORD = "granite-lemon-58-harbour"
NEWER_PASSWORD = "copper-willow-64-canyon"
CLI_PASSWORD = "silent-harbor-39-quartz"
CLI_NEW_PASSWORD = "orchid-tundra-85-beacon"


@pytest.fixture
def server(portal: Portal) -> Iterator[str]:
    """The portal's app under uvicorn on a free loopback port; yields its base URL."""
    with _served(create_app(portal.settings, services=portal.app.state.services, background=False)) as url:
        yield url


@contextmanager
def _served(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn, as `labgpu serve` runs it, on a free loopback port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    # log_config=None: uvicorn's loggers keep no handlers of their own and reach the test's capture.
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, log_level="debug", access_log=True
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _form_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text[:300]
    return csrf_from(page.text)


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    parts = []
    formatter = logging.Formatter()
    for record in caplog.records:
        # The test's own HTTP clients (this thread) log the cookies they are sent back: not labgpu's logs.
        if (
            record.name.startswith(("httpx", "httpcore"))
            and record.threadName == threading.main_thread().name
        ):
            continue
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info:
            parts.append(formatter.formatException(record.exc_info))
    return "\n".join(parts)


def test_no_secret_is_logged_at_debug(
    portal: Portal,
    server: str,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger: labgpu.*, uvicorn.*, httpx, ...
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # SQLAlchemy keeps its own at WARNING
    portal.add_account("alice")
    secrets: dict[str, str] = {
        "alice's password": PASSWORD,
        "a mistyped password": WRONG_PASSWORD,
        "the applicant's password": APPLICANT_PASSWORD,
        "the form applicant's password": FORM_APPLICANT_PASSWORD,
        "the new password": NEW_PASSWORD,
        "the newer password": NEWER_PASSWORD,
        "the secret key": portal.app.state.secret_key,
    }

    with httpx.Client(base_url=server, follow_redirects=False) as visitor:
        r = visitor.post(
            "/api/v1/applications",
            json={"name": "carol", "email": "c@lab.test", "password": APPLICANT_PASSWORD},
        )
        assert r.status_code == 201, r.text
        data = {"name": "erin", "email": "e@lab.test", "password": FORM_APPLICANT_PASSWORD}
        token = _form_token(visitor, "/apply")
        r = visitor.post(
            "/apply", data={**data, "confirm_password": FORM_APPLICANT_PASSWORD, "csrf_token": token}
        )
        assert r.status_code == 200, r.text[:300]

    with httpx.Client(base_url=server, follow_redirects=False) as browser:
        form = {"name": "alice", "password": WRONG_PASSWORD, "csrf_token": _form_token(browser, "/login")}
        assert browser.post("/login", data=form).status_code == 401
        form = {"name": "alice", "password": PASSWORD, "csrf_token": _form_token(browser, "/login")}
        assert browser.post("/login", data=form).status_code == 303
        secrets["the first session cookie"] = browser.cookies[SESSION_COOKIE]
        csrf = {"X-CSRF-Token": _form_token(browser, "/account")}
        r = browser.post(
            "/api/v1/me/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=csrf,
        )
        assert r.status_code == 200, r.text
        secrets["the session cookie after the change"] = browser.cookies[SESSION_COOKIE]
        form = {
            "current_password": NEW_PASSWORD,
            "new_password": NEWER_PASSWORD,
            "confirm_password": NEWER_PASSWORD,
            "csrf_token": _form_token(browser, "/account"),
        }
        assert browser.post("/account/password", data=form).status_code == 200
        csrf = {"X-CSRF-Token": _form_token(browser, "/account")}
        r = browser.post("/api/v1/tokens", json={"name": "laptop"}, headers=csrf)
        assert r.status_code == 201
        secrets["an API token"] = r.json()["token"]
        page = browser.post(
            "/account/tokens", data={"name": "ci", "csrf_token": _form_token(browser, "/account")}
        )
        match = re.search(r"lgp_[A-Za-z0-9_-]{20,}", page.text)
        assert match, "the account page shows a new token once"
        secrets["a token made on the page"] = match.group(0)

    with httpx.Client(base_url=server) as script:
        for name in ("an API token", "a token made on the page"):
            me = script.get("/api/v1/me", headers={"Authorization": f"Bearer {secrets[name]}"})
            assert me.status_code == 200 and me.json()["name"] == "alice"
        # A mistyped token is no secret, but it is someone's: the answer must not echo it either.
        r = script.get("/api/v1/me", headers={"Authorization": f"Bearer {secrets['an API token']}x"})
        assert r.status_code == 401 and secrets["an API token"] not in r.text

    # The command line: a new admin with the password on stdin, then a new password.
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABGPU_STATE_DIR", str(portal.settings.state_dir))
    if portal.settings.database_url:
        monkeypatch.setenv("LABGPU_DATABASE_URL", portal.settings.database_url)
    monkeypatch.setenv("LABGPU_RUNTIME_URL", f"unix://{tmp_path}/no-daemon.sock")
    monkeypatch.setattr("sys.stdin", io.StringIO(CLI_PASSWORD + "\n"))
    assert run(["admin", "create", "boss", "--password-stdin"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO(CLI_NEW_PASSWORD + "\n"))
    assert run(["admin", "passwd", "boss", "--password-stdin"]) == 0
    secrets["the admin's password"] = CLI_PASSWORD
    secrets["the admin's new password"] = CLI_NEW_PASSWORD
    printed = capsys.readouterr()

    logs = _log_text(caplog)
    # The capture saw the traffic (so finding nothing below means something).
    assert re.search(r'"POST /login HTTP/1\.1" 303', logs), "uvicorn's access log was not captured"
    assert '"POST /api/v1/tokens HTTP/1.1" 201' in logs
    assert "INSERT INTO api_tokens" in logs, "SQLAlchemy's statement log was not captured"
    leaked = {
        what: where
        for what, value in secrets.items()
        for where in ("log", "output")
        if value in (logs if where == "log" else printed.out + printed.err)
    }
    assert leaked == {}, f"secrets found: {leaked}"


OTHER_AGENT_TOKEN = "other-agent-token-" + "z" * 32


def test_the_agent_token_is_not_logged_at_debug(
    gpu_portal: PortalFactory, gpu_agent: ServedAgent, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    portal, _ = gpu_lab(gpu_portal, gpu_agent)
    state = portal.app.state
    app = create_app(portal.settings, services=state.services, background=False, gpu_usage=state.gpu_usage)
    # Host gpu2's agent has another token: the portal sends its own there, and it is refused.
    with (
        serve_agent(tmp_path / "gpu2", token=OTHER_AGENT_TOKEN) as other,
        _served(app) as server,
        httpx.Client(base_url=server, follow_redirects=False) as browser,
    ):
        add_host(portal, "gpu2", agent_url=other.url)
        form = {"name": "alice", "password": PASSWORD, "csrf_token": _form_token(browser, "/login")}
        assert browser.post("/login", data=form).status_code == 303
        hosts = {h["host"]: h for h in browser.get("/api/v1/gpus").json()}
        assert hosts["gpu1"]["available"] and len(hosts["gpu1"]["gpus"]) == 4
        assert "refused the portal's token" in hosts["gpu2"]["message"]
        assert browser.get("/gpus").status_code == 200
        csrf = {"X-CSRF-Token": _form_token(browser, "/bookings")}
        r = browser.post("/api/v1/bookings", json={"gpus": 1, "until": "+1h"}, headers=csrf)
        assert r.status_code == 201, r.text
        pages = browser.get("/gpus").text + browser.get("/bookings").text

    logs = _log_text(caplog)
    # The capture saw the portal ask both agents (so finding nothing below means something).
    assert f"{gpu_agent.url}/v1/gpus" in logs and f"{other.url}/v1/gpus" in logs, "httpx was not captured"
    assert '"POST /api/v1/bookings HTTP/1.1" 201' in logs, "uvicorn's access log was not captured"
    for secret in (AGENT_TOKEN, OTHER_AGENT_TOKEN):
        assert secret not in logs and secret not in pages
