"""Every state change by a person is in the audit log: who, what, which member, from which address.

Driven by the app's route table and the CLI's command tree: every state-changing route (POST, PUT, PATCH,
DELETE) and every CLI command must have an entry below, or the test fails. An entry either

- drives the route in the daemon-less portal and finds the audit row, with the caller as actor and the
  caller's address (RUN);
- needs a real LXD/Incus daemon (NEEDS_DAEMON): then the test checks that the service function the route
  calls writes that action, and that without a daemon the route fails WITHOUT an audit row claiming it
  happened; the integration test named beside it checks the row against a real daemon;
- changes nothing that is a person's state change (NOT_AUDITED, with the reason).

The portal here has no daemon, but GPU bookings are driven for real (RUN): the GPUs of alice's host come
from a REAL `labgpu agent` served over the recorded 4-GPU host (tests/web/gpus/helpers.py), whose token
the portal's settings carry.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from labgpu.cli.main import app as cli_app
from labgpu.services.apps import _apps as app_services
from labgpu.services.apps import _files as app_files
from labgpu.services.gpus import _booking_requests as booking_requests
from labgpu.services.gpus import _bookings as bookings
from labgpu.services.gpus import _fair_use as gpu_fair_use
from labgpu.services.gpus import _free_requests as free_requests
from labgpu.services.gpus import _modes as gpu_modes
from labgpu.services.gpus import _no_gpu as no_gpu
from labgpu.services.gpus._usage import GpuUsageReader
from labgpu.services.hosts import _gateway as gateway
from labgpu.services.hosts import _remote as remote_hosts
from labgpu.services.members import _lifecycle as lifecycle
from labgpu.services.members import _moves as moves
from labgpu.services.members import _my_templates as my_templates
from labgpu.services.members import _shares as shares
from labgpu.services.members import _snapshots as snapshots
from labgpu.services.members._add import add_member
from labgpu.services.members._desktop import set_vnc_password
from labgpu.services.members._keys import add_keys, remove_key
from labgpu.services.members._power import reset_password, set_container_password, set_power
from labgpu.services.members._records import load_member
from labgpu.services.members._set import set_member
from labgpu.services.ops import _backups as backups
from labgpu.services.ops._restore import restore_backup
from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _applications as applications
from labgpu.services.portal import _audit as audit
from labgpu.services.portal import _notices as notices
from labgpu.services.portal import _totp_enrol as totp_enrol
from labgpu.services.templates import _build as template_build
from labgpu.services.templates import _catalog as templates
from labgpu.store.models import Application, ApplicationStatus, Booking, BookingStatus, Member, Role
from labgpu.web.routes.portal.signon import CLAIMS_COOKIE
from tests.web.conftest import PASSWORD, Portal, csrf_from, login, page_token, signed_claims
from tests.web.gpus.helpers import PortalFactory, ServedAgent, add_host
from tests.web.test_authorization import app_routes
from tests.web.test_totp import _identity as totp_identity
from tests.web.test_totp import code as totp_code
from tests.web.test_totp import enable_totp, second_step

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
NEW_PASSWORD = "granite-lemon-58-harbour"


def _key() -> str:
    return (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + " alice@laptop"
    )


@dataclass
class Lab:
    """The daemon-less portal with boss (admin) and alice logged in, each from their own address."""

    portal: Portal
    tmp: Path
    admin: TestClient
    alice: TestClient
    agent_url: str

    ADMIN_ADDRESS = "192.0.2.1"
    ALICE_ADDRESS = "192.0.2.2"
    VISITOR_ADDRESS = "192.0.2.3"

    def csrf(self, client: TestClient) -> dict[str, str]:
        return {"X-CSRF-Token": page_token(client)}

    def form(self, client: TestClient, **data: str) -> dict[str, str]:
        return {**data, "csrf_token": page_token(client)}

    def application(self, name: str = "carol") -> int:
        return applications.submit(
            self.portal.svc, name=name, email=f"{name}@lab.test", password="quiet-walnut-58-harbor"
        ).id

    def failed_application(self) -> int:
        app_id = self.application("dora")
        with self.portal.svc.session() as session:
            session.execute(
                update(Application).where(Application.id == app_id).values(status=ApplicationStatus.FAILED)
            )
        return app_id

    def alice_token_id(self) -> int:
        r = self.alice.post("/api/v1/tokens", json={"name": "t"}, headers=self.csrf(self.alice))
        assert r.status_code == 201
        return int(r.json()["id"])

    def alice_channel_id(self) -> int:
        from labgpu.services import notify

        url = "wecombot://0123456789abcdef0123456789abcdef"
        return notify.add_channel(self.portal.svc, "alice", url=url, kinds=["test"]).id

    def alice_key(self) -> str:
        from labgpu.domain.members import parse_public_key
        from labgpu.store.models import SshKey

        key = parse_public_key(_key())
        with self.portal.svc.session() as session:
            member = load_member(session, "alice")
            member.ssh_keys.append(SshKey(public_key=key.line, fingerprint=key.fingerprint, comment=None))
        return key.fingerprint

    def share_dir(self) -> str:
        path = self.tmp / "datasets"
        path.mkdir(exist_ok=True)
        return str(path)

    def share(self) -> str:
        shares.add_share(self.portal.svc, name="data", source=self.share_dir(), path="/data")
        return "data"

    def gpu_host(self) -> None:
        """alice's container on host gpu1, in booked mode, whose GPUs come from the served agent."""
        host_id = add_host(self.portal, agent_url=self.agent_url)
        with self.portal.svc.session() as session:
            member = session.scalars(select(Member).where(Member.name == "alice")).one()
            member.host_id, member.container, member.gpu_spec = host_id, "alice", "none"

    def alice_free_request(self) -> int:
        """A waiting "tell me when GPUs are free" request of alice's, on her host."""
        self.gpu_host()
        return free_requests.ask_when_free(self.portal.svc, member="alice", count=1).id

    def alice_booking(self, *, pending: bool = False) -> int:
        """A booking of alice's (GPU 1, in an hour, for an hour); ``pending``: waiting for an admin."""
        self.gpu_host()
        reader: GpuUsageReader = self.portal.app.state.gpu_usage
        view = booking_requests.request_booking(
            self.portal.svc, reader, member="alice", gpus="1,", start="+1h", until="+1h"
        )
        if pending:
            with self.portal.svc.session() as session:
                session.execute(
                    update(Booking).where(Booking.id == view.id).values(status=BookingStatus.PENDING)
                )
        return view.id


# A call: (who, lambda lab -> response). Who: "admin", "alice" or "visitor" (the audit row's actor/address).
Call = tuple[str, Callable[[Lab], httpx.Response]]


def _visitor(lab: Lab) -> TestClient:
    return lab.portal.client(Lab.VISITOR_ADDRESS)


def _apply_form(lab: Lab) -> httpx.Response:
    client = _visitor(lab)
    token = csrf_from(client.get("/apply").text)
    data = {"name": "erin", "email": "e@lab.test", "password": "quiet-walnut-58-harbor"}
    return client.post("/apply", data={**data, "confirm_password": data["password"], "csrf_token": token})


def _signon_apply_form(lab: Lab) -> httpx.Response:
    """Someone who signed on without an account (LDAP, OIDC, CAS) applies: the prefilled form."""
    client = _visitor(lab)
    client.cookies.set(CLAIMS_COOKIE, signed_claims(lab.portal.app, name="frank"), domain="testserver.local")
    token = csrf_from(client.get("/signon/apply").text)
    return client.post("/signon/apply", data={"name": "frank", "email": "f@lab.test", "csrf_token": token})


def _signon_link_form(lab: Lab) -> httpx.Response:
    """alice links a sign-on identity to her account with her password (and is logged in)."""
    client = lab.portal.client(Lab.ALICE_ADDRESS)
    client.cookies.set(CLAIMS_COOKIE, signed_claims(lab.portal.app, name="alice"), domain="testserver.local")
    token = csrf_from(client.get("/signon/apply").text)
    return client.post(
        "/signon/link",
        data={"name": "alice", "password": PASSWORD, "csrf_token": token},
        follow_redirects=False,
    )


def _login_form(lab: Lab) -> httpx.Response:
    return login(lab.portal.client(Lab.ALICE_ADDRESS), "alice")


def _logout_form(lab: Lab) -> httpx.Response:
    return lab.alice.post("/logout", data=lab.form(lab.alice), follow_redirects=False)


def _book_api(lab: Lab) -> httpx.Response:
    lab.gpu_host()
    body = {"gpus": 1, "from": "+1h", "until": "+2h", "note": "ablation runs"}
    return lab.alice.post("/api/v1/bookings", json=body, headers=lab.csrf(lab.alice))


def _book_form(lab: Lab) -> httpx.Response:
    lab.gpu_host()
    token = page_token(lab.alice, "/bookings")
    data = {"count": "1", "start": "+1h", "until": "+2h", "note": "ablation runs", "csrf_token": token}
    return lab.alice.post("/bookings", data=data)


def _on_booking(who: str, action: str, *, api: bool, pending: bool = False, **body: str) -> Call:
    """``who`` posts ``action`` on a booking of alice's, through the API or the board's form."""

    def call(lab: Lab) -> httpx.Response:
        booking = lab.alice_booking(pending=pending)
        client = lab.admin if who == "admin" else lab.alice
        if api:
            url = f"/api/v1/bookings/{booking}/{action}"
            return client.post(url, json=body, headers=lab.csrf(client))
        token = page_token(client, "/bookings")
        return client.post(f"/bookings/{booking}/{action}", data={**body, "csrf_token": token})

    return who, call


def _free_api(lab: Lab) -> httpx.Response:
    lab.gpu_host()
    return lab.alice.post("/api/v1/gpu-free-requests", json={"count": 2}, headers=lab.csrf(lab.alice))


def _free_form(lab: Lab) -> httpx.Response:
    lab.gpu_host()
    return lab.alice.post(
        "/gpus/notify-free", data={"count": "2", "csrf_token": page_token(lab.alice, "/gpus")}
    )


def _free_cancel(api: bool) -> Call:
    def call(lab: Lab) -> httpx.Response:
        request = lab.alice_free_request()
        if api:
            url = f"/api/v1/gpu-free-requests/{request}/cancel"
            return lab.alice.post(url, json={}, headers=lab.csrf(lab.alice))
        token = page_token(lab.alice, "/gpus")
        return lab.alice.post(f"/gpus/notify-free/{request}/cancel", data={"csrf_token": token})

    return "alice", call


# (method, path) -> (expected audit action, target, the call).
RUN: dict[tuple[str, str], tuple[str, str, Call]] = {
    ("POST", "/login"): ("account.login", "alice", ("alice", _login_form)),
    ("POST", "/logout"): ("account.logout", "alice", ("alice", _logout_form)),
    ("POST", "/apply"): ("application.submit", "erin", ("anonymous", _apply_form)),
    ("POST", "/signon/apply"): ("application.submit", "frank", ("anonymous", _signon_apply_form)),
    ("POST", "/signon/link"): ("account.identity.link", "alice", ("alice", _signon_link_form)),
    ("POST", "/api/v1/applications"): (
        "application.submit",
        "erin",
        (
            "anonymous",
            lambda lab: _visitor(lab).post(
                "/api/v1/applications",
                json={"name": "erin", "email": "e@lab.test", "password": "quiet-walnut-58-harbor"},
            ),
        ),
    ),
    ("POST", "/api/v1/applications/{application_id}/reject"): (
        "application.reject",
        "carol",
        (
            "admin",
            lambda lab: lab.admin.post(
                f"/api/v1/applications/{lab.application()}/reject",
                json={"reason": "not in the lab"},
                headers=lab.csrf(lab.admin),
            ),
        ),
    ),
    ("POST", "/admin/applications/{application_id}/reject"): (
        "application.reject",
        "carol",
        (
            "admin",
            lambda lab: lab.admin.post(
                f"/admin/applications/{lab.application()}/reject", data=lab.form(lab.admin, reason="no")
            ),
        ),
    ),
    ("POST", "/api/v1/applications/{application_id}/retry"): (
        "application.retry",
        "dora",
        (
            "admin",
            lambda lab: lab.admin.post(
                f"/api/v1/applications/{lab.failed_application()}/retry", headers=lab.csrf(lab.admin)
            ),
        ),
    ),
    ("POST", "/admin/applications/{application_id}/retry"): (
        "application.retry",
        "dora",
        (
            "admin",
            lambda lab: lab.admin.post(
                f"/admin/applications/{lab.failed_application()}/retry", data=lab.form(lab.admin)
            ),
        ),
    ),
    ("POST", "/api/v1/me/password"): (
        "account.password.change",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.post(
                "/api/v1/me/password",
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                headers=lab.csrf(lab.alice),
            ),
        ),
    ),
    ("POST", "/account/password"): (
        "account.password.change",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.post(
                "/account/password",
                data=lab.form(
                    lab.alice,
                    current_password=PASSWORD,
                    new_password=NEW_PASSWORD,
                    confirm_password=NEW_PASSWORD,
                ),
            ),
        ),
    ),
    ("POST", "/api/v1/me/logout-everywhere"): (
        "account.logout_everywhere",
        "alice",
        ("alice", lambda lab: lab.alice.post("/api/v1/me/logout-everywhere", headers=lab.csrf(lab.alice))),
    ),
    ("POST", "/account/logout-everywhere"): (
        "account.logout_everywhere",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.post(
                "/account/logout-everywhere", data=lab.form(lab.alice), follow_redirects=False
            ),
        ),
    ),
    ("POST", "/api/v1/tokens"): (
        "token.create",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.post("/api/v1/tokens", json={"name": "ci"}, headers=lab.csrf(lab.alice)),
        ),
    ),
    ("POST", "/account/tokens"): (
        "token.create",
        "alice",
        ("alice", lambda lab: lab.alice.post("/account/tokens", data=lab.form(lab.alice, name="ci"))),
    ),
    ("DELETE", "/api/v1/tokens/{token_id}"): (
        "token.revoke",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.delete(
                f"/api/v1/tokens/{lab.alice_token_id()}", headers=lab.csrf(lab.alice)
            ),
        ),
    ),
    ("POST", "/account/tokens/{token_id}/revoke"): (
        "token.revoke",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.post(
                f"/account/tokens/{lab.alice_token_id()}/revoke", data=lab.form(lab.alice)
            ),
        ),
    ),
    ("POST", "/account/notifications"): (
        "notify.channel.add",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.post(
                "/account/notifications",
                data=lab.form(lab.alice, url="wecombot://0123456789abcdef0123456789abcdef", kind="test"),
            ),
        ),
    ),
    ("POST", "/account/notifications/{channel_id}/remove"): (
        "notify.channel.remove",
        "alice",
        (
            "alice",
            lambda lab: lab.alice.post(
                f"/account/notifications/{lab.alice_channel_id()}/remove", data=lab.form(lab.alice)
            ),
        ),
    ),
    ("POST", "/api/v1/members/{name}/disable"): (
        "account.disable",
        "alice",
        ("admin", lambda lab: lab.admin.post("/api/v1/members/alice/disable", headers=lab.csrf(lab.admin))),
    ),
    ("POST", "/admin/members/{name}/disable"): (
        "account.disable",
        "alice",
        ("admin", lambda lab: lab.admin.post("/admin/members/alice/disable", data=lab.form(lab.admin))),
    ),
    ("POST", "/api/v1/members/{name}/enable"): (
        "account.enable",
        "alice",
        (
            "admin",
            lambda lab: (
                accounts.set_disabled(lab.portal.svc, "alice", disabled=True),
                lab.admin.post("/api/v1/members/alice/enable", headers=lab.csrf(lab.admin)),
            )[1],
        ),
    ),
    ("POST", "/admin/members/{name}/enable"): (
        "account.enable",
        "alice",
        (
            "admin",
            lambda lab: (
                accounts.set_disabled(lab.portal.svc, "alice", disabled=True),
                lab.admin.post("/admin/members/alice/enable", data=lab.form(lab.admin)),
            )[1],
        ),
    ),
    ("POST", "/api/v1/shares"): (
        "share.add",
        "data",
        (
            "admin",
            lambda lab: lab.admin.post(
                "/api/v1/shares",
                json={"name": "data", "source": lab.share_dir(), "path": "/data"},
                headers=lab.csrf(lab.admin),
            ),
        ),
    ),
    ("POST", "/admin/shares"): (
        "share.add",
        "data",
        (
            "admin",
            lambda lab: lab.admin.post(
                "/admin/shares", data=lab.form(lab.admin, name="data", source=lab.share_dir(), path="/data")
            ),
        ),
    ),
    # GPU bookings: the target is the booking's member.
    ("POST", "/api/v1/bookings"): ("booking.add", "alice", ("alice", _book_api)),
    ("POST", "/bookings"): ("booking.add", "alice", ("alice", _book_form)),
    ("POST", "/api/v1/bookings/{booking_id}/cancel"): (
        "booking.cancel",
        "alice",
        _on_booking("alice", "cancel", api=True),
    ),
    ("POST", "/bookings/{booking_id}/cancel"): (
        "booking.cancel",
        "alice",
        _on_booking("alice", "cancel", api=False),
    ),
    ("POST", "/api/v1/bookings/{booking_id}/extend"): (
        "booking.extend",
        "alice",
        _on_booking("alice", "extend", api=True, until="+1h"),
    ),
    ("POST", "/bookings/{booking_id}/extend"): (
        "booking.extend",
        "alice",
        _on_booking("alice", "extend", api=False, until="+1h"),
    ),
    ("POST", "/api/v1/bookings/{booking_id}/approve"): (
        "booking.approve",
        "alice",
        _on_booking("admin", "approve", api=True, pending=True),
    ),
    ("POST", "/bookings/{booking_id}/approve"): (
        "booking.approve",
        "alice",
        _on_booking("admin", "approve", api=False, pending=True),
    ),
    ("POST", "/api/v1/bookings/{booking_id}/reject"): (
        "booking.reject",
        "alice",
        _on_booking("admin", "reject", api=True, pending=True, reason="GPU 1 is for the course"),
    ),
    ("POST", "/bookings/{booking_id}/reject"): (
        "booking.reject",
        "alice",
        _on_booking("admin", "reject", api=False, pending=True, reason="GPU 1 is for the course"),
    ),
    # "Tell me when GPUs are free": the target is the request's member.
    ("POST", "/api/v1/gpu-free-requests"): ("gpu.free-request", "alice", ("alice", _free_api)),
    ("POST", "/gpus/notify-free"): ("gpu.free-request", "alice", ("alice", _free_form)),
    ("POST", "/api/v1/gpu-free-requests/{request_id}/cancel"): (
        "gpu.free-request.cancel",
        "alice",
        _free_cancel(api=True),
    ),
    ("POST", "/gpus/notify-free/{request_id}/cancel"): (
        "gpu.free-request.cancel",
        "alice",
        _free_cancel(api=False),
    ),
    # GPU usage: a member's weekly-report choice
    ("POST", "/usage/weekly-report"): (
        "usage.settings",
        "alice",
        ("alice", lambda lab: lab.alice.post("/usage/weekly-report", data=lab.form(lab.alice, weekly="on"))),
    ),
}

# Two-factor log-in (TOTP): alice's own account; the codes are real ones of her secret (tests/web/test_totp.py).


def _alice_with_totp(lab: Lab) -> str:
    return enable_totp(lab.portal, "alice")


def _totp_login(lab: Lab) -> httpx.Response:
    secret = _alice_with_totp(lab)
    client = lab.portal.client(Lab.ALICE_ADDRESS)
    assert login(client, "alice").status_code == 303
    return second_step(client, totp_code(secret, 0))  # type: ignore[return-value]


def _totp_form(path: str, *, enabled: bool, started: bool = False) -> Callable[[Lab], httpx.Response]:
    def call(lab: Lab) -> httpx.Response:
        data: dict[str, str] = {}
        if enabled:
            data["code"] = totp_code(_alice_with_totp(lab), 0)
        elif started:
            secret = totp_enrol.start_totp_setup(lab.portal.svc, totp_identity(lab.portal, "alice")).secret
            data["code"] = totp_code(secret, 0)
        return lab.alice.post(path, data=lab.form(lab.alice, **data))

    return call


RUN.update(
    {
        ("POST", "/login/totp"): ("account.login", "alice", ("alice", _totp_login)),
        ("POST", "/account/totp/setup"): (
            "account.totp.setup",
            "alice",
            ("alice", _totp_form("/account/totp/setup", enabled=False)),
        ),
        ("POST", "/account/totp/confirm"): (
            "account.totp.enable",
            "alice",
            ("alice", _totp_form("/account/totp/confirm", enabled=False, started=True)),
        ),
        ("POST", "/account/totp/recovery-codes"): (
            "account.totp.recovery_codes",
            "alice",
            ("alice", _totp_form("/account/totp/recovery-codes", enabled=True)),
        ),
        ("POST", "/account/totp/disable"): (
            "account.totp.disable",
            "alice",
            ("alice", _totp_form("/account/totp/disable", enabled=True)),
        ),
    }
)

# Routes whose service needs the daemon: (service function, action it audits, the integration test that
# checks the row against a real daemon).
JUPYTER_TEST = "tests/browser/test_jupyter_apps.py"  # web apps and files (issue 16)
NEEDS_DAEMON: dict[tuple[str, str], tuple[Callable[..., Any], str, str]] = {
    ("POST", "/api/v1/applications/{application_id}/approve"): (
        applications.approve,
        "application.approve",
        "tests/browser/test_portal_flow.py",
    ),
    ("POST", "/admin/applications/{application_id}/approve"): (
        applications.approve,
        "application.approve",
        "tests/browser/test_portal_flow.py",
    ),
    ("POST", "/api/v1/members/{name}/{action}"): (
        set_power,
        "member.{action}",
        "tests/web/test_member_pages.py",
    ),
    ("POST", "/me/power"): (set_power, "member.{action}", "tests/web/test_member_pages.py"),
    ("POST", "/me/no-gpu"): (no_gpu.set_no_gpu, "member.no-gpu", "tests/integration/test_no_gpu.py"),
    ("POST", "/api/v1/members/{name}/no-gpu"): (
        no_gpu.set_no_gpu,
        "member.no-gpu",
        "tests/integration/test_no_gpu.py",
    ),
    ("POST", "/admin/members/{name}/no-gpu"): (
        no_gpu.set_no_gpu,
        "member.no-gpu",
        "tests/integration/test_no_gpu.py",
    ),
    ("POST", "/api/v1/members/{name}/reset"): (
        lifecycle.reset_member,
        "member.reset",
        "tests/integration/test_member_lifecycle.py",
    ),
    ("POST", "/me/reset"): (
        lifecycle.reset_member,
        "member.reset",
        "tests/integration/test_member_lifecycle.py",
    ),
    ("POST", "/api/v1/members/{name}/initial-password"): (
        reset_password,
        "member.passwd",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/me/container-password"): (
        set_container_password,
        "member.container_password",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/me/vnc-password"): (
        set_vnc_password,
        "member.vnc_password",
        "tests/integration/test_desktop_login.py",
    ),
    ("POST", "/api/v1/members/{name}/snapshots"): (
        snapshots.take_snapshot,
        "member.snapshot",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/me/snapshots"): (
        snapshots.take_snapshot,
        "member.snapshot",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/api/v1/members/{name}/snapshots/{snapshot}/restore"): (
        snapshots.restore_snapshot,
        "member.restore",
        "tests/integration/test_member_lifecycle.py",
    ),
    ("POST", "/me/snapshots/restore"): (
        snapshots.restore_snapshot,
        "member.restore",
        "tests/integration/test_member_lifecycle.py",
    ),
    ("DELETE", "/api/v1/members/{name}/snapshots/{snapshot}"): (
        snapshots.delete_snapshot,
        "member.snapshot.rm",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/me/snapshots/delete"): (
        snapshots.delete_snapshot,
        "member.snapshot.rm",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/api/v1/members/{name}/templates"): (
        my_templates.save_my_template,
        "member.template.save",
        "tests/web/test_my_templates_pages.py",
    ),
    ("POST", "/me/templates"): (
        my_templates.save_my_template,
        "member.template.save",
        "tests/web/test_my_templates_pages.py",
    ),
    ("DELETE", "/api/v1/members/{name}/templates/{label}"): (
        my_templates.remove_my_template,
        "member.template.rm",
        "tests/web/test_my_templates_pages.py",
    ),
    ("POST", "/me/templates/delete"): (
        my_templates.remove_my_template,
        "member.template.rm",
        "tests/web/test_my_templates_pages.py",
    ),
    ("POST", "/admin/member-templates/delete"): (
        my_templates.remove_my_template,
        "member.template.rm",
        "tests/web/test_my_templates_pages.py",
    ),
    ("POST", "/me/templates/reset"): (
        lifecycle.reset_member,
        "member.reset",
        "tests/web/test_my_templates_pages.py",
    ),
    ("DELETE", "/api/v1/members/{name}"): (
        lifecycle.remove_member,
        "member.rm",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/admin/members/{name}/remove"): (
        lifecycle.remove_member,
        "member.rm",
        "tests/web/test_member_self_service.py",
    ),
    # The new limits are stored and audited first; applying them to the container needs the daemon.
    ("PATCH", "/api/v1/members/{name}"): (
        set_member,
        "member.set",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/admin/members/{name}/limits"): (
        set_member,
        "member.set",
        "tests/web/test_member_self_service.py",
    ),
    # The key is stored and audited first; installing it in the container needs the daemon.
    ("POST", "/api/v1/members/{name}/keys"): (
        add_keys,
        "member.key.add",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/me/keys"): (add_keys, "member.key.add", "tests/web/test_member_self_service.py"),
    ("DELETE", "/api/v1/members/{name}/keys"): (
        remove_key,
        "member.key.rm",
        "tests/web/test_member_self_service.py",
    ),
    ("POST", "/me/keys/remove"): (
        remove_key,
        "member.key.rm",
        "tests/web/test_member_self_service.py",
    ),
    # Forgotten in the store (audited) first; then detached from every container on the daemon.
    ("DELETE", "/api/v1/shares/{share}"): (
        shares.remove_share,
        "share.rm",
        "tests/integration/test_shares.py",
    ),
    ("POST", "/admin/shares/{name}/remove"): (
        shares.remove_share,
        "share.rm",
        "tests/integration/test_shares.py",
    ),
    # Web apps and files (issue 16).
    ("POST", "/members/{name}/apps/{app}/open"): (app_services.start_app, "app.open", JUPYTER_TEST),
    ("POST", "/members/{name}/apps/{app}/stop"): (app_services.stop_app, "app.stop", JUPYTER_TEST),
    ("PUT", "/members/{name}/files/upload"): (app_files.upload, "files.upload", JUPYTER_TEST),
}

NOT_AUDITED = {
    ("POST", "/lang"): "sets the language cookie of this browser; nothing on the server changes",
    (
        "POST",
        "/account/notifications/{channel_id}/test",
    ): "sends a test message; nothing in the store changes",
}


def _actions(arg: ast.expr, module: Any) -> set[str]:
    """The action names an audit call's argument can be: a literal, an f-string written as its template
    ("member.{action}"), either branch of a conditional, or a module constant."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return {arg.value}
    if isinstance(arg, ast.JoinedStr):
        return {
            "".join(
                str(v.value) if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
                for v in arg.values
                if isinstance(v, ast.Constant | ast.FormattedValue)
            )
        }
    if isinstance(arg, ast.IfExp):
        return _actions(arg.body, module) | _actions(arg.orelse, module)
    if isinstance(arg, ast.Name) and isinstance(getattr(module, arg.id, None), str):
        return {getattr(module, arg.id)}
    return set()


def _audits(function: Callable[..., Any], action: str) -> bool:
    """Whether ``function`` (or a module-level helper of its module that it calls) writes ``action``."""
    module = inspect.getmodule(function)
    assert module is not None
    tree = ast.parse(inspect.getsource(module))
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    seen: set[str] = set()
    todo = [function.__name__]
    while todo:
        name = todo.pop()
        if name in seen or name not in defs:
            continue
        seen.add(name)
        for node in ast.walk(defs[name]):
            is_audit = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "audit"
            )
            if is_audit and len(node.args) > 1 and action in _actions(node.args[1], module):
                return True
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                todo.append(node.func.id)
    return False


@pytest.fixture
def lab(gpu_portal: PortalFactory, gpu_agent: ServedAgent, tmp_path: Path) -> Lab:
    """The daemon-less portal (tests/web/gpus' one: it trusts the served agent's token, for bookings)."""
    portal = gpu_portal()
    portal.add_account("boss", role=Role.ADMIN)
    portal.add_account("alice")
    admin = portal.client(Lab.ADMIN_ADDRESS)
    alice = portal.client(Lab.ALICE_ADDRESS)
    assert login(admin, "boss").status_code == 303
    assert login(alice, "alice").status_code == 303
    return Lab(portal, tmp_path, admin, alice, gpu_agent.url)


def test_every_state_changing_route_is_in_the_audit_table(portal: Portal) -> None:
    changing = {(m, p) for m, p in app_routes(portal.app) if m in STATE_CHANGING}
    listed = set(RUN) | set(NEEDS_DAEMON) | set(NOT_AUDITED)
    assert changing - listed == set(), "add the new route to RUN, NEEDS_DAEMON or NOT_AUDITED"
    assert listed - changing == set(), "the table names routes the app no longer has"


@pytest.mark.parametrize("route", sorted(RUN), ids=lambda r: f"{r[0]} {r[1]}")
def test_each_state_change_writes_an_audit_row_with_who_and_where(lab: Lab, route: tuple[str, str]) -> None:
    action, target, (who, call) = RUN[route]
    before = {e.id for e in audit.list_events(lab.portal.svc, limit=1000)}
    response = call(lab)
    assert response.status_code < 400, (route, response.status_code, response.text[:300])
    new = [e for e in audit.list_events(lab.portal.svc, limit=1000) if e.id not in before]
    actor = {"admin": "boss", "alice": "alice", "anonymous": "anonymous"}[who]
    address = {"admin": Lab.ADMIN_ADDRESS, "alice": Lab.ALICE_ADDRESS, "anonymous": Lab.VISITOR_ADDRESS}[who]
    rows = [(e.action, e.actor, e.target, e.source_address) for e in new]
    assert (action, actor, target, address) in rows, rows


@pytest.mark.parametrize("route", sorted(NEEDS_DAEMON), ids=lambda r: f"{r[0]} {r[1]}")
def test_routes_that_need_the_daemon_call_a_service_that_audits(route: tuple[str, str]) -> None:
    function, action, covered_by = NEEDS_DAEMON[route]
    assert _audits(function, action), f"{function.__module__}.{function.__name__} writes no {action!r}"
    assert (Path(__file__).resolve().parents[2] / covered_by).is_file(), covered_by


def test_without_a_daemon_no_audit_row_claims_a_change_that_did_not_happen(lab: Lab) -> None:
    """The daemon is down: reset, a new initial password, snapshots and approval fail, and the log says
    nothing happened (an audit row is written in the transaction of the change it records). Power actions
    are the exception by design: they record the desired state (audited), which reconcile carries out."""
    app_id = lab.application()
    before = {e.id for e in audit.list_events(lab.portal.svc, limit=1000)}
    headers = lab.csrf(lab.admin)
    calls = [
        lab.admin.post("/api/v1/members/alice/reset", json={"confirm": "alice"}, headers=headers),
        lab.admin.post("/api/v1/members/alice/initial-password", headers=headers),
        lab.admin.post("/api/v1/members/alice/snapshots", json={}, headers=headers),
        lab.admin.post(f"/api/v1/applications/{app_id}/approve", json={}, headers=headers),
    ]
    assert all(r.status_code >= 400 for r in calls), [r.status_code for r in calls]
    new = [e.action for e in audit.list_events(lab.portal.svc, limit=1000) if e.id not in before]
    assert new == [], new


def test_a_refused_booking_change_writes_no_audit_row(lab: Lab) -> None:
    """Each booking route, refused (a rule, a bad time, not pending, not an admin's, no such booking):
    a 4xx, and no booking.* row claims it happened."""
    booking = lab.alice_booking()
    before = {e.id for e in audit.list_events(lab.portal.svc, limit=1000)}
    alice, admin = lab.csrf(lab.alice), lab.csrf(lab.admin)
    board = page_token(lab.alice, "/bookings")
    calls = [
        lab.alice.post("/api/v1/bookings", json={"gpus": [7], "until": "+1h"}, headers=alice),
        lab.alice.post("/api/v1/bookings", json={"gpus": [1], "from": "+1h", "until": "+1h"}, headers=alice),
        lab.alice.post("/bookings", data={"count": "9", "until": "+1h", "csrf_token": board}),
        lab.alice.post(f"/api/v1/bookings/{booking}/extend", json={"until": "soon"}, headers=alice),
        lab.alice.post(f"/bookings/{booking}/extend", data={"until": "+99999999999w", "csrf_token": board}),
        lab.alice.post(f"/api/v1/bookings/{booking}/approve", headers=alice),
        lab.alice.post(f"/bookings/{booking}/reject", data={"csrf_token": board}),
        lab.admin.post(f"/api/v1/bookings/{booking}/approve", headers=admin),  # approved, not pending
        lab.admin.post(f"/api/v1/bookings/{booking + 1}/cancel", headers=admin),
        lab.alice.post(f"/bookings/{booking + 1}/cancel", data={"csrf_token": board}),
    ]
    assert all(400 <= r.status_code < 500 for r in calls), [r.status_code for r in calls]
    new = [e.action for e in audit.list_events(lab.portal.svc, limit=1000) if e.id not in before]
    assert new == [], new


# The CLI ---------------------------------------------------------------------------------------------


def _cli_commands() -> set[str]:
    def walk(command: Any, prefix: tuple[str, ...]) -> set[str]:
        if hasattr(command, "commands"):
            return set().union(*(walk(sub, (*prefix, n)) for n, sub in command.commands.items()))
        return {" ".join(prefix)}

    return walk(typer.main.get_command(cli_app), ())


READ_ONLY_COMMANDS = {
    "admin list", "backup list", "config reference", "config show", "container list", "db current", "doctor",
    "gpu bookings", "gpu free-requests", "gpu idle", "gpu list", "gpu top", "gpu usage", "host gateway status", "host list", "jobs status", "member key list",
    "member list", "member show", "member snapshots", "member template list", "notice list", "share list", "template export",
    "template list", "template show", "template validate",
    "app list",
    "notify queue", "notify channels",
    "auth test",  # asks the log-in backends; writes nothing (no session, no throttle count)
}  # fmt: skip
# Commands that run labgpu itself or its upkeep, not a person's change to the lab (their own changes, like
# reconcile's repairs, are logged as what they are).
NOT_A_PERSONS_CHANGE = {
    "agent": "serves GPU facts",
    "serve": "runs the portal",
    "boot": "brings the host up after a restart (reconcile audits its repairs)",
    "jobs run-once": "the job runner (bookings, idle GPUs, reconcile), acting as the system",
    "gpu record": "records NVML facts to a file for tests",
    "db upgrade": "migrates the store's schema",
    "reconcile": "repairs drift; its repairs are audited as 'reconcile'",
    "host init": "prepares the daemon (pool, profile, subuid); idempotent, prints every step",
    "host install-services": "writes systemd units for labgpu itself",
    "host gateway sync": "rewrites the gateway's files from the store (no new state)",
    "template bootstrap": "builds and publishes an image (template.build is audited by template build)",
    "notify test": "sends test messages to the configured channels; nothing in the store changes",
    # issue 15 (setup): the steps above, in a row, on a fresh host
    "setup": "installs packages, starts the daemon, db upgrade, host init, template bootstrap, units",
}
# CLI command -> (service function, the action it audits).
AUDITED_COMMANDS: dict[str, tuple[Callable[..., Any], str]] = {
    "admin create": (accounts.create_account, "account.create"),
    "admin disable": (accounts.set_disabled, "account.disable"),
    "admin enable": (accounts.set_disabled, "account.enable"),
    "admin passwd": (accounts.set_password, "account.password.set"),
    "backup create": (backups.create_backup, "backup.create"),
    "backup restore": (restore_backup, "backup.restore"),
    "gpu approve": (bookings.approve, "booking.approve"),
    "gpu assign": (gpu_modes.assign, "gpu.assign"),
    "gpu book": (bookings.book, "booking.add"),
    "gpu notify-free": (free_requests.ask_when_free, "gpu.free-request"),
    "gpu notify-free-cancel": (free_requests.cancel_free_request, "gpu.free-request.cancel"),
    "gpu cancel": (bookings.cancel, "booking.cancel"),
    "gpu extend": (bookings.extend, "booking.extend"),
    "gpu mode": (gpu_modes.set_mode, "gpu.mode"),
    "gpu reject": (bookings.reject, "booking.reject"),
    "gpu unassign": (gpu_modes.unassign, "gpu.unassign"),
    "gpu limits": (gpu_fair_use.set_usage_settings, "usage.settings"),
    "host add": (remote_hosts.add_host, "host.add"),
    "host drain": (remote_hosts.set_drained, "host.drain"),
    "host undrain": (remote_hosts.set_drained, "host.undrain"),
    "host rm": (remote_hosts.remove_host, "host.rm"),
    "host set": (remote_hosts.set_public_address, "host.set"),
    "host gateway enable": (gateway.enable, "gateway.enable"),
    "host gateway disable": (gateway.disable, "gateway.disable"),
    "host gateway add-user": (gateway.add_user, "gateway.user.add"),
    "host gateway remove-user": (gateway.remove_user, "gateway.user.rm"),
    "member add": (add_member, "member.add"),
    "member key add": (add_keys, "member.key.add"),
    "member key rm": (remove_key, "member.key.rm"),
    "member move": (moves.move_member, "member.move"),
    "member passwd": (reset_password, "member.passwd"),
    "member reset": (lifecycle.reset_member, "member.reset"),
    "member restart": (set_power, "member.{action}"),
    "member restore": (snapshots.restore_snapshot, "member.restore"),
    "member rm": (lifecycle.remove_member, "member.rm"),
    "member set": (set_member, "member.set"),
    "member snapshot": (snapshots.take_snapshot, "member.snapshot"),
    "member snapshot-rm": (snapshots.delete_snapshot, "member.snapshot.rm"),
    "member template save": (my_templates.save_my_template, "member.template.save"),
    "member template rm": (my_templates.remove_my_template, "member.template.rm"),
    "member start": (set_power, "member.{action}"),
    "member stop": (set_power, "member.{action}"),
    "notice add": (notices.add_notice, "notice.add"),
    "notice rm": (notices.remove_notice, "notice.rm"),
    "share add": (shares.add_share, "share.add"),
    "share rm": (shares.remove_share, "share.rm"),
    "template build": (template_build.build_template, "template.build"),
    "template import": (templates.import_template, "template.import"),
    "template rm": (templates.remove_template, "template.rm"),
    "app stop": (app_services.stop_app, "app.stop"),
    "admin totp-reset": (totp_enrol.reset_totp, "account.totp.reset"),
}
# Commands whose options call further services (command -> [(service function, the action it audits)]).
ALSO_AUDITED: dict[str, list[tuple[Callable[..., Any], str]]] = {
    "host set": [(remote_hosts.set_agent_url, "host.set")],  # --agent-url
    "member set": [(no_gpu.set_no_gpu, "member.no-gpu")],  # --no-gpu/--gpu
}


def test_every_cli_command_is_classified() -> None:
    commands = _cli_commands()
    listed = READ_ONLY_COMMANDS | set(NOT_A_PERSONS_CHANGE) | set(AUDITED_COMMANDS)
    assert commands - listed == set(), "say whether the new command changes state, and what it audits"
    assert listed - commands == set()
    assert set(ALSO_AUDITED) <= set(AUDITED_COMMANDS)


def _callback_source(command: str) -> str:
    """The command's function, and the module-level helpers of its module that it calls."""
    found: Any = typer.main.get_command(cli_app)
    for word in command.split():
        found = found.commands[word]
    callback = inspect.unwrap(found.callback)
    module = inspect.getmodule(callback)
    source = inspect.getsource(callback)
    helpers = {
        n.func.id
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and inspect.isfunction(getattr(module, n.func.id, None))
    }
    return source + "".join(inspect.getsource(getattr(module, h)) for h in sorted(helpers))


@pytest.mark.parametrize(
    ("command", "function", "action"),
    [
        *((command, *AUDITED_COMMANDS[command]) for command in sorted(AUDITED_COMMANDS)),
        *((command, *call) for command in sorted(ALSO_AUDITED) for call in ALSO_AUDITED[command]),
    ],
    ids=lambda v: v if isinstance(v, str) else getattr(v, "__name__", None),
)
def test_every_state_changing_cli_command_calls_a_service_that_audits(
    command: str, function: Callable[..., Any], action: str
) -> None:
    assert f"{function.__name__}(" in _callback_source(command), (
        f"`labgpu {command}` does not call {function}"
    )
    assert _audits(function, action), (
        f"`labgpu {command}`: {function.__module__}.{function.__name__} writes no {action!r}"
    )
