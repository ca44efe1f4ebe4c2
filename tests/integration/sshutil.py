"""A real OpenSSH client against members' containers (through their proxy devices)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pexpect

SSH_OPTS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ConnectTimeout=10",
]  # fmt: skip


def make_key(folder: Path, name: str = "id") -> Path:
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", str(key)], check=True
    )
    return key


def ssh_key(
    key: Path, port: int, command: str, *, user: str = "ubuntu", host: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-i", str(key), "-p", str(port), f"{user}@{host}", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def ssh_password(
    password: str, port: int, command: str, *, user: str = "ubuntu", host: str = "127.0.0.1"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sshpass", "-p", password, "ssh", *SSH_OPTS, "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=password,keyboard-interactive", "-p", str(port), f"{user}@{host}", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def change_expired_password(
    port: int, old: str, new: str, *, key: Path | None = None, user: str = "ubuntu", host: str = "127.0.0.1"
) -> str:
    """Log in on a terminal as a person would, and go through the forced password change."""
    args = [*SSH_OPTS, "-tt", "-p", str(port)]
    if key is not None:
        args += ["-o", "BatchMode=no", "-i", str(key)]
    else:
        args += ["-o", "PubkeyAuthentication=no"]
    child = pexpect.spawn("ssh", [*args, f"{user}@{host}"], encoding="utf-8", timeout=30)
    transcript = []
    try:
        if key is None:
            child.expect(r"[Pp]assword:")
            child.sendline(old)
        child.expect(r"[Cc]urrent password:|\(current\) UNIX password:")
        transcript.append(child.before or "")
        child.sendline(old)
        child.expect(r"[Nn]ew password:")
        child.sendline(new)
        child.expect(r"[Rr]etype new password:")
        child.sendline(new)
        # After a key login sshd closes the connection once the password is changed; after a password login
        # (PAM changes it while authenticating) the shell starts.
        if child.expect([pexpect.EOF, r"\$ $"]) == 1:
            transcript.append(child.before or "")
            child.sendline("exit")
            child.expect(pexpect.EOF)
        transcript.append(child.before or "")
    finally:
        child.close(force=True)
    return "".join(transcript)
