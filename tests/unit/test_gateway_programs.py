"""The login gateway's two programs and the files `host gateway enable` writes, without sshd or a daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labgpu.gateway import helper, login
from labgpu.services.hosts import _gateway as gateway
from labgpu.services.hosts._gateway_paths import GatewayPaths
from labgpu.system import programs, sshd, sudoers


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["labgpu-login", "-c", "/usr/local/bin/labgpu-login"], {}, ("shell",)),
        (["labgpu-login", "-c", "/x"], {"SSH_ORIGINAL_COMMAND": "hostname"}, ("command", "hostname")),
        (["labgpu-login", "-c", "/x"], {"SSH_ORIGINAL_COMMAND": "/usr/lib/openssh/sftp-server"}, ("sftp",)),
        (["labgpu-login", "-c", "/x"], {"SSH_ORIGINAL_COMMAND": "internal-sftp"}, ("sftp",)),
        (["labgpu-login", "-c", "/x"], {"SSH_ORIGINAL_COMMAND": "scp -t /tmp"}, ("command", "scp -t /tmp")),
        (["labgpu-login", "-c", "/x"], {"SSH_ORIGINAL_COMMAND": "  "}, ("shell",)),
        # As a login shell without ForceCommand: sshd runs SHELL -c CMD.
        (["/usr/local/bin/labgpu-login", "-c", "id"], {}, ("command", "id")),
        (["-labgpu-login"], {}, ("shell",)),
    ],
)
def test_login_turns_the_session_into_helper_arguments(
    argv: list[str], environ: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert login.requested(argv, environ, self_path="/usr/local/bin/labgpu-login") == expected


def test_login_passes_only_a_sane_terminal_and_language() -> None:
    env = login.helper_environment(
        {"TERM": "xterm-256color", "LANG": "zh_CN.UTF-8", "LD_PRELOAD": "/tmp/x.so", "PYTHONPATH": "/tmp"}
    )
    assert env == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TERM": "xterm-256color", "LANG": "zh_CN.UTF-8"}
    assert "TERM" not in login.helper_environment({"TERM": "x\x1b]0;evil\x07"})


@pytest.mark.parametrize(
    "argv", [[], ["shell", "x"], ["command"], ["command", "a", "b"], ["sudo"], ["--map", "/tmp/m"]]
)
def test_helper_accepts_only_its_three_requests(argv: list[str]) -> None:
    with pytest.raises(helper.Refused):
        helper.parse_request(argv)


def test_helper_believes_only_sudo(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(helper.Refused):
        helper.invoking_uid({})
    with pytest.raises(helper.Refused):
        helper.invoking_uid({"SUDO_UID": "1000x"})
    with pytest.raises(helper.Refused, match="root"):
        helper.invoking_uid({"SUDO_UID": "0"})
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    with pytest.raises(helper.Refused, match="through sudo"):
        helper.invoking_uid({"SUDO_UID": "1001"})


def test_helper_refuses_a_map_others_could_write(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"version": 1}))
    path.chmod(0o666)
    with pytest.raises(helper.Refused, match="root's alone"):
        helper.load_map(str(path))
    path.chmod(0o600)
    assert helper.load_map(str(path)) == {"version": 1}
    with pytest.raises(helper.Refused, match="not set up"):
        helper.load_map(str(tmp_path / "missing.json"))


def test_helper_finds_the_member_by_uid_and_group() -> None:
    gmap = {"group": "root", "members": {"root": {"uid": 0, "container": "c1", "state": "running"}}}
    assert helper.find_member(gmap, 0) == ("root", gmap["members"]["root"])
    with pytest.raises(helper.Refused, match="not a labgpu member"):
        helper.find_member({"group": "root", "members": {"root": {"uid": 5, "container": "c1"}}}, 0)
    with pytest.raises(helper.Refused, match="disabled"):
        helper.find_member(
            {"group": "root", "members": {"root": {"uid": 0, "container": "c", "disabled": True}}}, 0
        )
    with pytest.raises(helper.Refused, match="another host"):
        helper.find_member(
            {"group": "root", "members": {"root": {"uid": 0, "container": "c", "elsewhere": "gpu2.lab"}}}, 0
        )
    with pytest.raises(helper.Refused, match="no container"):
        helper.find_member({"group": "root", "members": {"root": {"uid": 0, "container": "-rf"}}}, 0)


def test_container_commands_never_splice_the_member_command() -> None:
    cmd = "rm -rf / ; $(evil) `x` 'y'"
    argv = helper.container_command("command", cmd, "ubuntu")
    assert argv[-1] == cmd and argv[-2] == "command"
    assert argv[:2] == ["runuser", "--shell=/bin/sh"]
    assert argv[2] == f"--command={helper.LAUNCHER}"
    assert helper.container_command("shell", None, "ubuntu") == ["runuser", "--login", "--", "ubuntu"]
    assert helper.container_command("sftp", None, "ubuntu")[-1] == "sftp"


def test_launcher_runs_a_command_with_the_users_shell_in_home(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"], "USER": "root"}
    done = subprocess.run(
        ["sh", "-c", helper.LAUNCHER, "labgpu-gateway", "command", "pwd; echo \"$0\"; exit 4"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 4
    lines = done.stdout.split()
    assert lines[0] == str(tmp_path)


def test_status_shows_ports_bookings_and_only_active_notices() -> None:
    now = datetime(2030, 1, 2, 10, 0, tzinfo=UTC)
    gmap = {
        "host": {"name": "gpu1", "address": "gpu1.lab"},
        "container_user": "ubuntu",
        "notices": [
            {"message": "Disk full \x1b[2J soon", "starts_at": (now - timedelta(hours=1)).isoformat(), "ends_at": None},
            {"message": "old", "starts_at": (now - timedelta(days=2)).isoformat(), "ends_at": (now - timedelta(days=1)).isoformat()},
            {"message": "later", "starts_at": (now + timedelta(hours=1)).isoformat(), "ends_at": None},
        ],
    }  # fmt: skip
    entry = {
        "container": "alice",
        "ports": {"ssh": 22001, "rdp": 22002},
        "gpus": "0,1",
        "home": "/home/ubuntu/alice",
        "bookings": [
            {"gpus": "0", "start_at": (now - timedelta(hours=1)).isoformat(), "end_at": (now + timedelta(hours=2)).isoformat()},
            {"gpus": "1", "start_at": (now + timedelta(days=1)).isoformat(), "end_at": (now + timedelta(days=2)).isoformat(), "status": "pending"},
        ],
    }  # fmt: skip
    text = helper.status_text("alice", entry, gmap, status="Running", gpus_attached=2, now=now)
    assert "labgpu: alice, container alice on gpu1 (running)" in text
    assert "ssh -p 22001 ubuntu@gpu1.lab" in text and "rdp gpu1.lab:22002" in text
    assert "GPUs 0 booked now" in text and "waiting for approval" in text
    assert "Disk full [2J soon" in text and "\x1b" not in text
    assert "old" not in text and "later" not in text


def test_rendered_sshd_drop_in_is_accepted_by_sshd(tmp_path: Path) -> None:
    paths = GatewayPaths(
        group="lgt-unit",
        login=Path("/usr/local/bin/labgpu-login"),
        helper=Path("/usr/local/lib/labgpu/gateway-exec"),
        sshd_config=tmp_path / "gw.conf",
        sudoers=Path("/etc/sudoers.d/labgpu-gateway"),
        dir=Path("/etc/labgpu/gateway"),
        python=Path("/usr/bin/python3"),
    )
    text = gateway.render_sshd_config(paths, password_login=False)
    for line in (
        "Match Group lgt-unit",
        "ForceCommand /usr/local/bin/labgpu-login",
        "AuthorizedKeysFile /etc/labgpu/gateway/keys/%u",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        "AllowAgentForwarding no",
        "PermitTTY yes",
        "PermitUserRC no",
        "PasswordAuthentication no",
    ):
        assert f"\n    {line}\n" in text or text.startswith(line) or f"\n{line}\n" in text, line
    sshd.check_sshd_config(text)
    with pytest.raises(Exception, match="sshd refuses"):
        sshd.check_sshd_config(text + "    Subsystem sftp /bin/false\n")
    assert "PasswordAuthentication" not in gateway.render_sshd_config(paths, password_login=True).replace(
        "# Password logins", ""
    )
    rule = gateway.render_sudoers(paths)
    assert "%lgt-unit ALL=(root) NOPASSWD: /usr/local/lib/labgpu/gateway-exec\n" in rule
    sudoers.check_sudoers(rule, paths.sudoers)


def test_installed_programs_run_isolated_with_the_hosts_python(tmp_path: Path) -> None:
    script = tmp_path / "gateway-exec"
    script.write_text(
        programs.render_script(
            helper.__file__,
            python=Path("/usr/bin/python3"),
            call=f"main(map_path={str(tmp_path / 'm.json')!r})",
        )
    )
    script.chmod(0o755)
    # Without sudo (no SUDO_UID) the helper refuses, whatever PYTHONPATH says.
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "json.py").write_text("raise SystemExit('hijacked')\n")
    done = subprocess.run(
        [str(script), "shell"], env={"PYTHONPATH": str(tmp_path / "evil"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "through sudo" in done.stderr and "hijacked" not in done.stderr
    assert script.read_text().startswith("#!/usr/bin/python3 -IS\n")
    assert sys.executable  # the test's own interpreter is not the one that runs the scripts


def test_paths_that_would_break_sshd_config_or_sudoers_are_refused() -> None:
    base = dict(
        group="g",
        login=Path("/usr/local/bin/labgpu-login"),
        helper=Path("/usr/local/lib/labgpu/gateway-exec"),
        sshd_config=Path("/etc/ssh/sshd_config.d/labgpu-gateway.conf"),
        sudoers=Path("/etc/sudoers.d/labgpu-gateway"),
        dir=Path("/etc/labgpu/gateway"),
        python=Path("/usr/bin/python3"),
    )
    GatewayPaths(**base).check()  # type: ignore[arg-type]
    for key, value in (
        ("helper", Path("/opt/my helper")),
        ("login", Path("relative")),
        ("sudoers", Path("/etc/sudoers.d/x.conf")),
    ):
        with pytest.raises(Exception, match="gateway_"):
            GatewayPaths(**{**base, key: value}).check()  # type: ignore[arg-type]
