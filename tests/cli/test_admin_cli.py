"""`labgpu admin`: the first admin is made on the command line; there are no default accounts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.context import Actor, Services
from labgpu.services.portal import _logins as logins
from labgpu.settings import load_settings
from labgpu.store.db import create_engine_for, session_factory

PASSWORD = "quartz-meadow-93-lantern"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
    env["LABGPU_STATE_DIR"] = str(tmp_path / "state")
    # Accounts need no daemon: point at one that does not exist.
    env["LABGPU_RUNTIME_URL"] = f"unix://{tmp_path}/no-daemon.sock"
    return env


def labgpu(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "labgpu.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=120,
    )


def _can_log_in(tmp_path: Path, name: str, password: str) -> bool:
    settings = load_settings(state_dir=str(tmp_path / "state"), runtime_url=f"unix://{tmp_path}/x.sock")
    engine = create_engine_for(settings)
    svc = Services(
        settings=settings,
        runtime=RuntimeClient(Endpoint.unix(tmp_path / "x.sock")),
        sessions=session_factory(engine),
        actor=Actor("test"),
    )
    try:
        logins.authenticate(svc, name=name, password=password, source_address="127.0.0.1", user_agent=None)
        return True
    except logins.LoginFailed:
        return False
    finally:
        engine.dispose()


def test_create_admin_with_password_on_stdin(tmp_path: Path) -> None:
    r = labgpu(
        tmp_path,
        "admin",
        "create",
        "boss",
        "--email",
        "boss@lab.example",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert r.returncode == 0, r.stderr
    assert "boss" in r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    listed = json.loads(labgpu(tmp_path, "admin", "list", "--json").stdout)
    assert [(a["name"], a["role"], a["has_password"], a["disabled"]) for a in listed] == [
        ("boss", "admin", True, False)
    ]
    assert _can_log_in(tmp_path, "boss", PASSWORD)
    # The same name again is refused.
    again = labgpu(tmp_path, "admin", "create", "boss", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.returncode == 2
    assert "already exists" in again.stderr


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "too short"),
        ("password", "most common"),
        ("iloveyou", "most common"),
        ("Qwertyuiop", "most common"),
        ("boss-is-here-42", "account name"),
        ("", "no password"),
    ],
)
def test_weak_or_common_passwords_are_refused_with_exit_2(tmp_path: Path, password: str, why: str) -> None:
    r = labgpu(tmp_path, "admin", "create", "boss", "--password-stdin", stdin=password + "\n")
    assert r.returncode == 2, r.stdout + r.stderr
    assert why in r.stderr
    assert "Traceback" not in r.stderr
    assert json.loads(labgpu(tmp_path, "admin", "list", "--json").stdout) == []


def test_bad_names_are_refused(tmp_path: Path) -> None:
    r = labgpu(tmp_path, "admin", "create", "Root; rm -rf", "--password-stdin", stdin=PASSWORD + "\n")
    assert r.returncode == 2
    assert "invalid member name" in r.stderr


def test_create_prompts_twice_without_echo(tmp_path: Path) -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "labgpu.cli", "admin", "create", "boss"],
        env=_env(tmp_path),
        encoding="utf-8",
        timeout=60,
    )
    child.expect("Password: ")
    child.sendline(PASSWORD)
    child.expect("Repeat for confirmation: ")
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert PASSWORD not in (child.before or "")
    assert _can_log_in(tmp_path, "boss", PASSWORD)


def test_disable_enable_and_passwd(tmp_path: Path) -> None:
    assert (
        labgpu(tmp_path, "admin", "create", "boss", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    )
    assert (
        labgpu(tmp_path, "admin", "create", "second", "--password-stdin", stdin=PASSWORD + "\n").returncode
        == 0
    )
    r = labgpu(tmp_path, "admin", "disable", "second")
    assert r.returncode == 0 and "disabled" in r.stdout
    assert not _can_log_in(tmp_path, "second", PASSWORD)
    assert "already disabled" in labgpu(tmp_path, "admin", "disable", "second").stdout
    assert labgpu(tmp_path, "admin", "enable", "second").returncode == 0
    assert _can_log_in(tmp_path, "second", PASSWORD)
    new = "violet-canyon-27-ember"
    assert labgpu(tmp_path, "admin", "passwd", "second", "--password-stdin", stdin=new + "\n").returncode == 0
    assert _can_log_in(tmp_path, "second", new)
    missing = labgpu(tmp_path, "admin", "disable", "nobody")
    assert missing.returncode == 2 and "no account named nobody" in missing.stderr
    table = labgpu(tmp_path, "admin", "list").stdout
    assert "boss" in table and "second" in table


def test_totp_reset_lets_a_locked_out_admin_log_in_with_the_password(tmp_path: Path) -> None:
    """An admin who lost their phone and their recovery codes: `labgpu admin totp-reset NAME`."""
    from labgpu.services.portal import _audit as audit
    from labgpu.services.portal import _totp_enrol as enrol
    from labgpu.services.portal._accounts import Identity, get_account
    from tests.web.test_totp import away_from_a_boundary, code

    assert (
        labgpu(tmp_path, "admin", "create", "boss", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    )
    settings = load_settings(state_dir=str(tmp_path / "state"), runtime_url=f"unix://{tmp_path}/x.sock")
    engine = create_engine_for(settings)
    svc = Services(
        settings=settings,
        runtime=RuntimeClient(Endpoint.unix(tmp_path / "x.sock")),
        sessions=session_factory(engine),
        actor=Actor("test"),
    )
    try:
        get_account(svc, "boss")
        away_from_a_boundary()
        boss = Identity(1, "boss", "admin", "session")
        setup = enrol.start_totp_setup(svc, boss)
        enrol.confirm_totp(svc, boss, code=code(setup.secret), source_address=None)
        assert isinstance(
            logins.authenticate(svc, name="boss", password=PASSWORD, source_address="x", user_agent=None),
            logins.SecondStep,
        )
        assert enrol.totp_members(svc) == {"boss"}

        r = labgpu(tmp_path, "admin", "totp-reset", "boss")
        assert r.returncode == 0 and "removed" in r.stdout, r.stderr
        assert json.loads(labgpu(tmp_path, "admin", "list", "--json").stdout)[0]["totp"] is False
        # A session, with the password alone.
        new = logins.authenticate(svc, name="boss", password=PASSWORD, source_address="x", user_agent=None)
        assert isinstance(new, logins.NewLogin)
        [row] = audit.list_events(svc, action="account.totp.reset", limit=5)
        assert row.target == "boss" and row.actor.endswith("@cli")

        missing = labgpu(tmp_path, "admin", "totp-reset", "nobody")
        assert (
            missing.returncode == 2
            and missing.stderr.startswith("error:")
            and "Traceback" not in missing.stderr
        )
    finally:
        engine.dispose()
