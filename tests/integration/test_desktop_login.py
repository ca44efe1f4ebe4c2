"""A new member's first remote-desktop login on the shipped desktop template (templates/desktop.yaml), with
real clients and no SSH detour, on LXD and on Incus.

- A member with an SSH key (the common path) has no password in the container. They set one on the portal
  (My container, Password, as the member, through the real web app) and a real RDP client (FreeRDP's
  ``xfreerdp`` under Xvfb) logs in with it through the connection sheet's RDP port: an XFCE session of the
  container's user runs in the container. They set a VNC password on the same page, which starts the VNC
  desktop; a real VNC client (gtk-vnc's ``gvnccapture``) logs in with it and brings back the desktop's
  picture, and a wrong VNC password is refused.
- A member without a key gets an expired initial password, which xrdp refuses (PAM: "You are required to
  change your password immediately"): no session starts, and the reason is in xrdp's log. Once the member
  sets a password on the portal, RDP logs in.

The template is built once per recipe and cached (tests/integration/desktoputil.py); one container per
scenario.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from labgpu.runtime.client import RuntimeClient
from labgpu.services.context import Services
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from labgpu.web.app import create_app
from tests.conftest import Cleanup, LabgpuEnv, port_block, unique_name
from tests.integration.desktoputil import ensure_desktop_template, rdp_login, vnc_capture, xvfb
from tests.integration.sshutil import make_key
from tests.web.conftest import PASSWORD, csrf_from, login

pytestmark = [pytest.mark.integration, pytest.mark.lane("template-build"), pytest.mark.timeout(2400)]

USER = "ubuntu"  # the container_user setting's default, and the template's user
RDP_PASSWORD = "Desk-top-2026-walnut"
VNC_PASSWORD = "Vn8-pear"


@dataclass
class Desk:
    env: LabgpuEnv
    svc: Services
    runtime: RuntimeClient


@pytest.fixture(scope="module")
def desk(
    runtime: RuntimeClient, test_profile: str, test_pool: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Desk]:
    folder = tmp_path_factory.mktemp("desktop")
    start, end = port_block(20000, 31999)
    env = LabgpuEnv(
        overrides={
            "state_dir": str(folder / "state"),
            "home_base": str(folder / "home"),
            "home_archive": str(folder / "archive"),
            "runtime_url": f"unix://{runtime.endpoint.socket_path}",
            "listen_address": "127.0.0.1",
            "port_range_start": str(start),
            "port_range_end": str(end),
            "profile_name": test_profile,
            "storage_pool": test_pool,
            "network_mode": "none",
            "ssh_ready_timeout": "180",
        },
        runtime=runtime,
    )
    template, seconds = ensure_desktop_template(runtime, env, folder)
    if seconds is not None:
        print(f"built the desktop template in {seconds:.0f} s")
    env.overrides["default_template"] = template
    yield Desk(env, env.services(), runtime)


def portal(desk: Desk) -> TestClient:
    return TestClient(
        create_app(desk.svc.settings, services=desk.svc, background=False), client=("192.0.2.71", 1)
    )


def exec_out(runtime: RuntimeClient, container: str, argv: list[str]) -> str:
    return runtime.instances.exec(container, argv, timeout=60).stdout


def desktop_sessions(runtime: RuntimeClient, container: str) -> list[str]:
    """The XFCE sessions of the container's user, as ``ps`` in the container shows them."""
    out = exec_out(runtime, container, ["ps", "-u", USER, "-o", "pid=,comm="])
    return [line.strip() for line in out.splitlines() if line.split()[-1:] == ["xfce4-session"]]


def wait_for(what: str, check, timeout: float = 180):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def add(desk: Desk, cleanup: Cleanup, name: str, **kwargs: object):  # type: ignore[no-untyped-def]
    sheet = add_member(desk.svc, validate_request(desk.svc, name=name, **kwargs))  # type: ignore[arg-type]
    cleanup.instance(sheet.container)
    accounts.set_password(desk.svc, name=name, password=PASSWORD)
    return sheet


def set_container_password(client: TestClient, name: str, password: str) -> None:
    assert login(client, name).status_code == 303
    token = csrf_from(client.get("/me").text)
    form = {"password": password, "confirm_password": password, "csrf_token": token}
    r = client.post("/me/container-password", data=form)
    assert r.status_code == 200 and "password was set" in r.text, r.text[-600:]


def test_member_with_a_key_sets_passwords_on_the_portal_and_logs_in_with_rdp_and_vnc(
    desk: Desk, cleanup: Cleanup, tmp_path: Path
) -> None:
    name = unique_name("dk")
    key = make_key(tmp_path)
    sheet = add(desk, cleanup, name, ssh_keys=[key.with_suffix(".pub").read_text()], rdp=True, vnc=True)
    assert sheet.initial_password is None  # a member with a key gets no admin-known password
    rdp_port, vnc_port = sheet.ports["rdp"], sheet.ports["vnc"]
    with portal(desk) as client, xvfb() as display:
        set_container_password(client, name, RDP_PASSWORD)
        # RDP: a real client, the password from the portal, a desktop session in the container.
        with rdp_login(display, rdp_port, USER, RDP_PASSWORD, tmp_path / "rdp.log") as rdp:
            sessions = wait_for(
                "an XFCE session after the RDP login", lambda: desktop_sessions(desk.runtime, name)
            )
            assert rdp.running(), rdp.output()
        assert len(sessions) == 1, sessions
        # VNC: its own password, set on the same page; the VNC desktop starts without SSH.
        page = client.get("/me").text
        assert 'id="vnc-password"' in page and str(vnc_port) in page
        token = csrf_from(page)
        too_long = {"password": RDP_PASSWORD, "confirm_password": RDP_PASSWORD, "csrf_token": token}
        r = client.post("/me/vnc-password", data=too_long)
        assert r.status_code == 400 and "exactly 8 characters" in r.text
        form = {"password": VNC_PASSWORD, "confirm_password": VNC_PASSWORD, "csrf_token": token}
        r = client.post("/me/vnc-password", data=form)
        assert r.status_code == 200 and "VNC desktop is running" in r.text, r.text[-600:]
        assert VNC_PASSWORD not in r.text
    # A second XFCE session (display :1), and its picture through a real VNC client: black at first, then
    # the desktop (the wallpaper, the panels, the icons: a PNG of about 500 KB, where a black one has 10 KB).
    wait_for("the VNC desktop's XFCE session", lambda: len(desktop_sessions(desk.runtime, name)) == 2)
    picture = vnc_capture(vnc_port, VNC_PASSWORD, tmp_path / "vnc.png")
    assert (picture.width, picture.height) == (1920, 1080)  # the template's vnc_geometry
    wait_for(
        "the desktop on the VNC screen", lambda: _try_capture(vnc_port, tmp_path / "vnc.png", desktop=True)
    )
    with pytest.raises(AssertionError, match="Authentication failure"):
        vnc_capture(vnc_port, "Wrong-pw", tmp_path / "wrong.png")
    # The VNC desktop comes back by itself after a restart (the member's lingering systemd starts it).
    desk.runtime.instances.restart(name, force=True)
    wait_for(
        "the VNC desktop after a restart",
        lambda: _try_capture(vnc_port, tmp_path / "again.png", desktop=True),
    )


def _try_capture(port: int, dest: Path, *, desktop: bool) -> bool:
    """Whether a VNC client logs in (and, with ``desktop``, sees more than a black screen)."""
    with contextlib.suppress(AssertionError):
        return vnc_capture(port, VNC_PASSWORD, dest).size > (100_000 if desktop else 0)
    return False


def test_member_without_a_key_sets_a_password_on_the_portal_instead_of_the_expired_one(
    desk: Desk, cleanup: Cleanup, tmp_path: Path
) -> None:
    name = unique_name("dn")
    sheet = add(desk, cleanup, name, rdp=True)
    assert sheet.initial_password
    rdp_port = sheet.ports["rdp"]
    with xvfb() as display:
        # The expired initial password: xrdp refuses it, and says why in its log; no desktop starts.
        with rdp_login(display, rdp_port, USER, sheet.initial_password, tmp_path / "expired.log"):
            log = wait_for(
                "xrdp's refusal of the expired password (in /var/log/xrdp-sesman.log)",
                lambda: _refusal(_sesman_log(desk.runtime, name)),
                timeout=120,
            )
        assert "You are required to change your password immediately" in log, log
        assert desktop_sessions(desk.runtime, name) == []
        # The way out needs no SSH: the portal sets a password of the member's own, and RDP takes it.
        with portal(desk) as client:
            set_container_password(client, name, RDP_PASSWORD)
        with rdp_login(display, rdp_port, USER, RDP_PASSWORD, tmp_path / "rdp.log") as rdp:
            wait_for("an XFCE session after the RDP login", lambda: desktop_sessions(desk.runtime, name))
            assert rdp.running(), rdp.output()


def _refusal(log: str) -> str:
    """The lines of xrdp's session manager that refuse the login, with PAM's reason (empty: none yet)."""
    lines = [
        line for line in log.splitlines() if "PAM:" in line or "pam_acct_mgmt" in line or "AUTHFAIL" in line
    ]
    return "\n".join(lines) if any("AUTHFAIL" in line for line in lines) else ""


def _sesman_log(runtime: RuntimeClient, container: str) -> str:
    return exec_out(runtime, container, ["cat", "/var/log/xrdp-sesman.log"])


def test_a_vnc_password_for_a_container_without_vnc_is_refused_saying_why(labgpu_env: LabgpuEnv) -> None:
    """The test SSH image has no TigerVNC: with a VNC port the portal says the template has no VNC server;
    without one, that an admin adds the port. Nothing is written in either case (409, no audit row)."""
    from labgpu.services.portal import _audit as audit

    svc = labgpu_env.services()
    with_port, without = unique_name("dv"), unique_name("dw")
    for name, vnc in ((with_port, True), (without, False)):
        add_member(svc, validate_request(svc, name=name, vnc=vnc))
        accounts.set_password(svc, name=name, password=PASSWORD)
    app = create_app(svc.settings, services=svc, background=False)
    for name, why in ((with_port, "no VNC server"), (without, "no VNC port")):
        with TestClient(app, client=("192.0.2.72", 1)) as client:
            assert login(client, name).status_code == 303
            page = client.get("/me").text
            assert ('id="vnc-password"' in page) is (name == with_port)
            form = {"password": VNC_PASSWORD, "confirm_password": VNC_PASSWORD, "csrf_token": csrf_from(page)}
            r = client.post("/me/vnc-password", data=form)
            assert r.status_code == 409 and why in r.text, r.text[-600:]
    assert not [e for e in audit.list_events(svc, limit=1000) if e.action == "member.vnc_password"]
