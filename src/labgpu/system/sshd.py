"""sshd: the login gateway's drop-in, checked by sshd itself before it is installed, and reloads."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from labgpu.errors import ConfigError, LabgpuError
from labgpu.system.commands import run, which
from labgpu.system.files import MARKER
from labgpu.system.systemd import systemd_running


def sshd_path() -> str | None:
    """The sshd program, or None when openssh-server is not installed."""
    return which("sshd")


def render_gateway_dropin(*, group: str, force_command: Path, keys_dir: Path, password_login: bool) -> str:
    """The sshd_config drop-in: one Match block for the gateway group."""
    auth = (
        "    # Password logins allowed (gateway_password_login = true).\n"
        if password_login
        else "    AuthenticationMethods publickey\n"
        "    PasswordAuthentication no\n"
        "    KbdInteractiveAuthentication no\n"
    )
    return (
        f"{MARKER} (`labgpu host gateway enable`); `labgpu host gateway disable` removes it.\n"
        f"# Accounts in {group} are labgpu members: whatever they ask for, sshd runs labgpu-login,\n"
        "# which takes them into their own container. Nothing is forwarded.\n"
        f"Match Group {group}\n"
        f"    ForceCommand {force_command}\n"
        f"    AuthorizedKeysFile {keys_dir}/%u\n"
        f"{auth}"
        "    DisableForwarding yes\n"
        "    AllowTcpForwarding no\n"
        "    AllowStreamLocalForwarding no\n"
        "    AllowAgentForwarding no\n"
        "    X11Forwarding no\n"
        "    PermitTunnel no\n"
        "    PermitListen none\n"
        "    PermitOpen none\n"
        "    GatewayPorts no\n"
        "    PermitTTY yes\n"
        "    PermitUserRC no\n"
    )


def check_sshd_config(text: str) -> None:
    """Have sshd parse the drop-in (in a throwaway main config). Raises ConfigError with sshd's words."""
    sshd = sshd_path()
    if sshd is None:
        raise ConfigError("sshd is not installed", hint="apt install openssh-server")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd -t wants its privilege separation folder
    with tempfile.TemporaryDirectory(prefix="labgpu-sshd-check-") as tmp:
        folder = Path(tmp)
        (folder / "drop-in.conf").write_text(text)
        run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "hostkey")],
            what="making a throwaway host key",
        )
        (folder / "sshd_config").write_text(
            f"Include {folder / 'drop-in.conf'}\nHostKey {folder / 'hostkey'}\n"
        )
        try:
            run([sshd, "-t", "-f", str(folder / "sshd_config")], what="sshd -t")
        except LabgpuError as exc:
            raise ConfigError(f"sshd refuses the gateway's drop-in: {exc.message}") from None


def effective_force_command(sshd_main_config: Path, account: str) -> str | None:
    """What sshd would force for ``account`` with the host's real configuration (sshd -T), or None
    when that cannot be told (no sshd, unreadable config)."""
    sshd = sshd_path()
    if sshd is None or not sshd_main_config.is_file():
        return None
    try:
        out = run(
            [
                sshd,
                "-T",
                "-f",
                str(sshd_main_config),
                "-C",
                f"user={account},host=gateway-check,addr=127.0.0.1",
            ],
            what="sshd -T",
        )
    except LabgpuError:
        return None
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key == "forcecommand":
            return value.strip()
    return "none"


def reload_sshd() -> str | None:
    """Have systemd reload sshd; returns the unit reloaded, or None when that could not be done (no
    systemd, or neither ssh.service nor sshd.service reloaded). Waits up to a minute per unit."""
    if not systemd_running():
        return None
    for unit in ("ssh.service", "sshd.service"):
        done = subprocess.run(
            ["systemctl", "reload", unit], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode == 0:
            return unit
    return None
