"""labgpu-login: what sshd runs for a member who logs in to the host (the login gateway).

sshd runs this program for every session of an account in the gateway group, whatever the client
asked for (``ForceCommand``; it is also the accounts' login shell). It runs as the member's host
account, which may do nothing else on the host, so there is nothing here to protect: it only turns
the session into a request to the privileged helper and hands over to ``sudo``:

- no command: ``gateway-exec shell`` (status, then a login shell in the member's container);
- the sftp subsystem (scp uses it too): ``gateway-exec sftp``;
- any other command: ``gateway-exec command CMD`` (run by the container user's shell).

The helper decides everything that matters (who the member is, from the uid sudo reports; which
container) and never trusts this program. This module uses the standard library only:
``labgpu host gateway enable`` installs it as a stand-alone script run by ``python3 -I -S``, so
neither PYTHON* variables nor site-packages reach it, and it passes sudo a fixed PATH.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DEFAULT_HELPER = "/usr/local/lib/labgpu/gateway-exec"
DEFAULT_SUDO = "/usr/bin/sudo"
_TERM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
_LANG_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}\Z")
_SFTP_NAMES = ("sftp-server", "internal-sftp")


def is_sftp(command: str) -> bool:
    """Whether an SSH command is the sftp subsystem (sshd passes its configured sftp-server path)."""
    words = command.split()
    return bool(words) and words[0].rsplit("/", 1)[-1] in _SFTP_NAMES


def requested(argv: list[str], environ: dict[str, str], *, self_path: str = "") -> tuple[str, ...]:
    """What the session asks for, as the helper's arguments: ("shell",), ("sftp",) or ("command", CMD).

    sshd gives a forced command the client's command in SSH_ORIGINAL_COMMAND. Without ForceCommand
    (this program only being the login shell) sshd runs ``SHELL -c CMD`` instead."""
    command = environ.get("SSH_ORIGINAL_COMMAND")
    if command is None and len(argv) >= 3 and argv[1] == "-c":
        candidate = argv[2]
        if candidate.strip() and candidate.strip() not in (self_path, argv[0]):
            command = candidate
    if command is None or not command.strip():
        return ("shell",)
    if is_sftp(command):
        return ("sftp",)
    return ("command", command)


def helper_environment(environ: dict[str, str]) -> dict[str, str]:
    """The few variables passed on (sudo resets the environment anyway): the terminal and the language."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    term = environ.get("TERM", "")
    if _TERM_RE.match(term):
        env["TERM"] = term
    for name in ("LANG", "LC_ALL"):
        value = environ.get(name, "")
        if _LANG_RE.match(value):
            env[name] = value
    return env


def main(argv: list[str] | None = None, *, helper: str = DEFAULT_HELPER, sudo: str = DEFAULT_SUDO) -> int:
    """Replace this process with ``sudo -n -- HELPER ARGS``; returns only when that cannot start."""
    argv = list(sys.argv if argv is None else argv)
    environ = dict(os.environ)
    args = requested(argv, environ, self_path=str(Path(argv[0]).absolute()) if argv else "")
    try:
        os.execve(sudo, [sudo, "-n", "--", helper, *args], helper_environment(environ))  # noqa: S606 - an argument list, no shell
    except OSError as exc:
        sys.stderr.write(
            f"labgpu: the login gateway cannot start ({sudo}: {exc.strerror}); tell your admin\n"
        )
    return 1
