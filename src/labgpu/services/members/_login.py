"""How a member logs in to their container: by SSH key from the first second, with an admin-known password
only when they gave no key, with sudo without a password (a setting), and with a password of their own
choosing for remote desktops.

- **A member with a key gets no password.** An admin-known initial password is expired (``chage -d 0``) so
  that its first login must change it; but with ``UsePAM yes`` sshd asks PAM's account stack after key
  logins too, and an expired password then answers "Password change required but no TTY available" to
  ``ssh -o BatchMode=yes``, scp, rsync and VS Code Remote-SSH. PAM's account stack cannot tell a key login
  from a password login (OpenSSH 9.2 fills ``SSH_AUTH_INFO_0`` only for the session stack; seen here), so
  the user of a member with a key keeps the image's locked password: the key works at once, password logins
  are impossible until the member sets a password of their own (portal, or ``sudo passwd``).
- **A member without a key** gets the admin-known initial password, expired: the first login changes it.
- **sudo without a password** for the container's own user (setting ``container_sudo_nopasswd``, on by
  default): the container is the member's own and unprivileged; its root is an unprivileged uid range on the
  host, and a sudo password protects nothing the member's shell could not reach anyway (their own files).
  A key-only member never needs a password.
- **A password of the member's own**: the portal sets it, not expired, for RDP, VNC and password SSH, which
  cannot change an expired password themselves (xrdp refuses it).

Everything is done by ONE constant script run in the container (arguments passed apart, never spliced in).
"""

from __future__ import annotations

import secrets
import string

from labgpu.runtime.client import RuntimeClient
from labgpu.services.members._records import ProvisionError

PASSWORD_ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "lIO0o1")
PASSWORD_LENGTH = 16

SUDOERS_FILE = "/etc/sudoers.d/labgpu-container-user"


def sudo_rule(user: str) -> str:
    """The sudoers file for ``container_sudo_nopasswd`` (``user`` is a setting checked as a user name)."""
    return (
        "# labgpu (setting container_sudo_nopasswd): the container's own user runs sudo without a password.\n"
        f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    )


# $1 user, $2 sudo policy (nopasswd|password), $3 password file or "-", $4 expire the password (1|0),
# $5 the sudo rule (sudo_rule()). Idempotent: every part checks before it changes. The password file is
# removed whatever happens.
LOGIN_SCRIPT = r"""
set -u
user="$1"; sudo_policy="$2"; secret="$3"; expire="$4"; rule="$5"
fail() { [ "$secret" = "-" ] || rm -f "$secret"; echo "$*" >&2; exit 1; }
id -u "$user" >/dev/null 2>&1 || fail "no user $user in the container"
sudoers=/etc/sudoers.d/labgpu-container-user
if [ "$sudo_policy" = nopasswd ]; then
  if [ -d /etc/sudoers.d ] && [ "$(cat "$sudoers" 2>/dev/null)" != "$rule" ]; then
    printf '%s\n' "$rule" >"$sudoers.tmp" && chmod 440 "$sudoers.tmp" || fail "cannot write $sudoers"
    if command -v visudo >/dev/null 2>&1 && ! visudo -c -q -f "$sudoers.tmp" >/dev/null 2>&1; then
      rm -f "$sudoers.tmp"; fail "visudo refuses the sudo rule"
    fi
    mv -f "$sudoers.tmp" "$sudoers" || fail "cannot write $sudoers"
  fi
else
  rm -f "$sudoers"
fi
if [ "$secret" != "-" ]; then
  chpasswd <"$secret"; rc=$?
  rm -f "$secret"
  [ $rc -eq 0 ] || fail "chpasswd failed"
  if [ "$expire" = 1 ]; then
    chage -d 0 "$user" || fail "chage failed"
  else
    chage -d "$(($(date +%s) / 86400))" "$user" || fail "chage failed"
  fi
fi
exit 0
"""


def generate_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def set_login(
    runtime: RuntimeClient,
    container: str,
    *,
    user: str,
    sudo_nopasswd: bool,
    password: str | None = None,
    expire: bool = True,
) -> None:
    """Put the container's login policy in place (key-login hook, sudo rule) and, given one, set the user's
    password: expired (an admin-known initial password) or not (one the member chose). One exec; safe to
    repeat. The container must be running. Raises ProvisionError with the container's words."""
    secret = "-"  # noqa: S105 (no password file: the script is told so by "-")
    if password is not None:
        if "\n" in password or "\r" in password:
            raise ProvisionError("a password cannot contain a line break")
        secret = f"/root/.labgpu-passwd-{secrets.token_hex(4)}"
        runtime.instances.push_file(container, secret, f"{user}:{password}\n".encode(), mode=0o600)
    argv = ["sh", "-c", LOGIN_SCRIPT, "sh", user, "nopasswd" if sudo_nopasswd else "password", secret]
    result = runtime.instances.exec(container, [*argv, "1" if expire else "0", sudo_rule(user).rstrip("\n")])
    if not result.ok:
        what = "setting the password and login policy" if password is not None else "setting the login policy"
        raise ProvisionError(f"{what} in {container} failed: {result.stderr.strip()[:200]}")
