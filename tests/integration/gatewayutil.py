"""A real login gateway for tests: the gateway's pieces in unique places, and a real sshd on loopback.

sudo only reads /etc/sudoers.d and sshd checks that every folder above a member's authorized keys
belongs to root, so the pieces go under /usr/local/lib/labgpu-test-XXXX and /etc/sudoers.d with
unique names, and the group is unique too; all of it (and every host account the gateway made) is
removed at teardown, also when the test failed.
"""

from __future__ import annotations

import contextlib
import grp
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import LabgpuEnv
from tests.integration.sshutil import SSH_OPTS


@dataclass
class GatewayUnderTest:
    env: LabgpuEnv
    root: Path
    group: str
    sshd_dir: Path
    sudoers: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def dropin(self) -> Path:
        return self.sshd_dir / "labgpu-gateway.conf"

    @property
    def main_config(self) -> Path:
        return self.sshd_dir / "sshd_config"

    @property
    def login(self) -> Path:
        return self.root / "labgpu-login"

    @property
    def helper(self) -> Path:
        return self.root / "gateway-exec"

    @property
    def log(self) -> Path:
        return self.sshd_dir / "sshd.log"

    def start_sshd(self) -> None:
        """Start sshd -D on a free loopback port with the gateway's drop-in included."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        key = self.sshd_dir / "hostkey"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.main_config.write_text(
            f"Include {self.dropin}\n"
            f"Port {self.port}\n"
            "ListenAddress 127.0.0.1\n"
            f"HostKey {key}\n"
            "PidFile none\n"
            "UsePAM yes\n"
            "KbdInteractiveAuthentication no\n"
            "PrintMotd no\n"
            "AcceptEnv LANG LC_*\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
            "LogLevel VERBOSE\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = self.log.open("ab")
        self.process = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.main_config)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"sshd exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1) as s,
            ):
                if s.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.1)
        raise AssertionError("sshd did not answer")

    def stop_sshd(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def ssh(
        self, user: str, key: Path, *command: str, extra: tuple[str, ...] = (), timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ssh", *SSH_OPTS, "-o", "BatchMode=yes", "-i", str(key), "-p", str(self.port), *extra,
             f"{user}@127.0.0.1", *command],
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


def _remove_accounts(group: str) -> None:
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return
    for entry in pwd.getpwall():
        if entry.pw_gid == gid and entry.pw_gecos.startswith("labgpu gateway account of "):
            subprocess.run(["userdel", entry.pw_name], capture_output=True, check=False)
    subprocess.run(["groupdel", group], capture_output=True, check=False)


@pytest.fixture
def test_gateway(labgpu_env: LabgpuEnv, tmp_path: Path) -> Iterator[GatewayUnderTest]:
    """Settings for a gateway in unique places (added to labgpu_env), torn down completely afterwards."""
    suffix = secrets.token_hex(4)
    root = Path(f"/usr/local/lib/labgpu-test-{suffix}")
    root.mkdir(mode=0o755, parents=True)
    sshd_dir = tmp_path / "sshd"
    sshd_dir.mkdir()
    gw = GatewayUnderTest(
        env=labgpu_env,
        root=root,
        group=f"lgt-{suffix}",
        sshd_dir=sshd_dir,
        sudoers=Path(f"/etc/sudoers.d/labgpu-test-{suffix}"),
    )
    labgpu_env.overrides.update(
        {
            "gateway_group": gw.group,
            "gateway_login_command": str(gw.login),
            "gateway_helper": str(gw.helper),
            "gateway_sshd_config": str(gw.dropin),
            "gateway_sudoers": str(gw.sudoers),
            "gateway_dir": str(root / "gateway"),
        }
    )
    try:
        yield gw
    finally:
        gw.stop_sshd()
        with contextlib.suppress(Exception):
            from labgpu.services.hosts._gateway import disable

            disable(labgpu_env.services(), reload=False)
        gw.sudoers.unlink(missing_ok=True)
        _remove_accounts(gw.group)
        shutil.rmtree(root, ignore_errors=True)
