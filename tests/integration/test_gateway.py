"""The login gateway end to end: a real sshd on loopback, real sudo, real host accounts, real containers."""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from tests.conftest import LabgpuEnv, unique_name
from tests.integration.gatewayutil import GatewayUnderTest, test_gateway  # noqa: F401 - the fixture
from tests.integration.sshutil import SSH_OPTS, change_expired_password, make_key, ssh_password

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env.env(), capture_output=True, text=True, timeout=600)


def as_user(user: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run a command on the host as a member's gateway account (what a host shell would let them do)."""
    return subprocess.run(
        ["runuser", "-u", user, "--", *command], capture_output=True, text=True, timeout=120, check=False
    )


def test_gateway_lands_each_member_in_their_own_container(
    test_gateway: GatewayUnderTest,  # noqa: F811
    tmp_path: Path,
) -> None:
    from labgpu.services.members._add import add_member, validate_request
    from labgpu.services.portal._notices import add_notice

    gw = test_gateway
    env = gw.env
    svc = env.services()
    alice, bob = unique_name("ga"), unique_name("gb")
    key_a, key_b = make_key(tmp_path, "a"), make_key(tmp_path, "b")
    sheets = {}
    for name, key in ((alice, key_a), (bob, key_b)):
        request = validate_request(svc, name=name, ssh_keys=[Path(f"{key}.pub").read_text()])
        sheets[name] = add_member(svc, request, wait_ssh=False)

    r = labgpu(env, "host", "gateway", "enable", "--sshd-config", str(gw.main_config), "--no-reload")
    assert r.returncode == 0, r.stdout + r.stderr
    gw.start_sshd()
    # What sshd itself says it would do for a member (sshd -T with the test's main config).
    r = labgpu(env, "host", "gateway", "status", "--sshd-config", str(gw.main_config))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sshd forces labgpu-login" in r.stdout

    # Each member got a host account: in the group, labgpu-login as shell, no password, a home it cannot write.
    for name in (alice, bob):
        entry = pwd.getpwnam(name)
        assert entry.pw_gid == grp.getgrnam(gw.group).gr_gid
        assert entry.pw_shell == str(gw.login)
        home = Path(entry.pw_dir)
        assert home.stat().st_uid == 0 and not home.stat().st_mode & 0o022
        keys = Path(env.settings().gateway_dir) / "keys" / name
        assert keys.stat().st_uid == 0 and oct(keys.stat().st_mode & 0o777) == "0o644"
        assert "restrict,pty ssh-ed25519" in keys.read_text()
        ids = subprocess.run(["id", "-Gn", name], capture_output=True, text=True, check=True).stdout.split()
        assert "lxd" not in ids and "incus" not in ids and "incus-admin" not in ids and "sudo" not in ids

    # A command runs in the member's container, as the container user; exit codes pass through.
    r = gw.ssh(alice, key_a, "hostname")
    assert r.returncode == 0, r.stderr + gw.log.read_text()[-3000:]
    assert r.stdout.strip() == sheets[alice].container
    started = time.monotonic()
    for _ in range(3):
        assert gw.ssh(alice, key_a, "true").returncode == 0
    print(f"gateway command round trip (ssh, sudo, helper, exec): {(time.monotonic() - started) / 3:.2f}s")
    r = gw.ssh(alice, key_a, "exit 7")
    assert r.returncode == 7, r.stderr
    r = gw.ssh(bob, key_b, "/bin/sh", "-c", "'id -un; hostname; cat /proc/1/comm'")
    assert r.returncode == 0, r.stderr
    user, host, init = r.stdout.split()
    assert (user, host) == ("ubuntu", sheets[bob].container)
    assert init != "sshd"  # PID 1 of the container, not of the host's sshd namespace

    # A member cannot reach another member's container, nor the host.
    r = gw.ssh(alice, key_b, "hostname")
    assert r.returncode == 255 and sheets[bob].container not in r.stdout
    forward = subprocess.run(
        ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-i", str(key_b), "-p", str(gw.port),
         "-W", f"127.0.0.1:{sheets[alice].ports['ssh']}", f"{bob}@127.0.0.1"],
        capture_output=True, text=True, timeout=60, input="",
    )  # fmt: skip
    assert forward.returncode == 255
    assert "SSH-2.0" not in forward.stdout
    remote = gw.ssh(bob, key_b, "true", extra=("-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:22"))
    assert remote.returncode == 255 and "forwarding failed" in remote.stderr
    # On the host, bob's account may run the helper through sudo and nothing else, and the helper
    # believes only sudo about who is asking.
    uid_a = pwd.getpwnam(alice).pw_uid
    r = as_user(bob, "env", f"SUDO_UID={uid_a}", "sudo", "-n", "--", str(gw.helper), "command", "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == sheets[bob].container
    r = as_user(bob, "sudo", "-n", "--", "/bin/sh", "-c", "id")
    assert r.returncode != 0 and "uid=0" not in r.stdout
    r = as_user(bob, str(gw.helper), "command", "hostname")
    assert r.returncode == 1 and "through sudo" in r.stderr
    r = as_user(bob, "sudo", "-n", "--", str(gw.helper), "shell", "--", "x")
    assert r.returncode == 1 and "usage" in r.stderr

    # scp over SFTP (the default) and the legacy protocol, into the home kept on the host.
    src = tmp_path / "report.txt"
    src.write_text("results\n")
    home_in = sheets[alice].container_home
    for flags, target in (((), "via-sftp.txt"), (("-O",), "via-scp.txt")):
        r = subprocess.run(
            ["scp", *SSH_OPTS, "-o", "BatchMode=yes", *flags, "-i", str(key_a), "-P", str(gw.port), str(src),
             f"{alice}@127.0.0.1:{home_in}/{target}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        on_host = Path(sheets[alice].home) / target
        assert on_host.read_text() == "results\n"
        assert on_host.stat().st_uid == os.stat(sheets[alice].home).st_uid  # the member's uid, mapped
    r = subprocess.run(
        ["sftp", *SSH_OPTS, "-o", "BatchMode=yes", "-i", str(key_a), "-P", str(gw.port), "-b", "-",
         f"{alice}@127.0.0.1"],
        input=f"cd {home_in}\nls\n", capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "via-sftp.txt" in r.stdout

    # A stopped container is started by the login.
    svc.runtime.instances.stop(sheets[alice].container, force=True)
    r = gw.ssh(alice, key_a, "hostname")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == sheets[alice].container
    assert svc.runtime.instances.state(sheets[alice].container).status == "Running"

    # An interactive login shows the status and the admin's notices, then a shell with a terminal.
    add_notice(svc, "Maintenance on Saturday 9:00-12:00: save your work")
    child = pexpect.spawn(
        "ssh",
        [*SSH_OPTS, "-tt", "-i", str(key_a), "-p", str(gw.port), f"{alice}@127.0.0.1"],
        encoding="utf-8",
        timeout=60,
    )
    try:
        child.expect(f"labgpu: {alice}, container {sheets[alice].container}")
        child.expect("Maintenance on Saturday")
        child.expect(r"[$#] ")
        child.sendline("tty; echo $((6*7)); exit 3")
        child.expect("/dev/pts/")
        child.expect("42")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3

    # Disabling removes the accounts and every file; members keep their containers and ports.
    r = labgpu(env, "host", "gateway", "disable", "--no-reload")
    assert r.returncode == 0, r.stderr
    for name in (alice, bob):
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    assert not gw.sudoers.exists() and not gw.dropin.exists() and not gw.helper.exists()
    with pytest.raises(KeyError):
        grp.getgrnam(gw.group)
    assert svc.runtime.instances.state(sheets[bob].container).status == "Running"


def test_gateway_password_login_must_be_changed_first(
    test_gateway: GatewayUnderTest,  # noqa: F811
    tmp_path: Path,
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    gw = test_gateway
    env = gw.env
    env.overrides["gateway_password_login"] = "true"
    svc = env.services()
    name = unique_name("gp")
    sheet = add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    r = labgpu(
        env, "host", "gateway", "enable", "--sshd-config", str(gw.main_config), "--no-reload", "--json"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    password = json.loads(r.stdout)["passwords"][name]
    gw.start_sshd()

    # The first login must change the password (as for containers), then the new one lands in the container.
    transcript = change_expired_password(gw.port, password, "Gateway-pass-2026", user=name)
    assert "password" in transcript.lower()
    r = ssh_password("Gateway-pass-2026", gw.port, "hostname", user=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == sheet.container
    assert ssh_password(password, gw.port, "true", user=name).returncode != 0


# What is tested is labgpu's bookkeeping, the same for both daemons (the tests above cover both): one is enough.
@pytest.mark.parametrize("daemon_kind", ["incus"], scope="session")
def test_member_commands_keep_an_enabled_gateway_current(
    test_gateway: GatewayUnderTest,  # noqa: F811
    tmp_path: Path,
) -> None:
    """With the gateway on, `member add`, `member key add|rm` and `member rm` change the member's host
    account at once: no `gateway sync` or reboot needed."""
    gw = test_gateway
    env = gw.env
    r = labgpu(env, "host", "gateway", "enable", "--sshd-config", str(gw.main_config), "--no-reload")
    assert r.returncode == 0, r.stdout + r.stderr
    gw.start_sshd()
    name = unique_name("gk")
    first, second = make_key(tmp_path, "first"), make_key(tmp_path, "second")

    r = labgpu(env, "member", "add", name, "--ssh-key", f"{first}.pub")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"ssh {name}@<host> reaches the container" in r.stdout
    assert pwd.getpwnam(name).pw_shell == str(gw.login)
    r = gw.ssh(name, first, "hostname")
    assert r.returncode == 0, r.stderr + gw.log.read_text()[-3000:]
    assert r.stdout.strip() == name

    r = labgpu(env, "member", "key", "add", name, f"{second}.pub")
    assert r.returncode == 0, r.stdout + r.stderr
    assert gw.ssh(name, second, "true").returncode == 0
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", f"{first}.pub"], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    r = labgpu(env, "member", "key", "rm", name, fingerprint)
    assert r.returncode == 0, r.stdout + r.stderr
    assert gw.ssh(name, first, "true").returncode == 255  # the removed key no longer opens the gateway
    assert gw.ssh(name, second, "true").returncode == 0

    r = labgpu(env, "member", "rm", name, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    assert not (Path(env.settings().gateway_dir) / "keys" / name).exists()
