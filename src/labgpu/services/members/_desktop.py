"""The VNC desktop of a member's container, set up from the portal: no SSH detour.

A template with ``desktop.vnc`` ships TigerVNC and a user unit ``vncserver@.service`` but no VNC password,
so VNC stays off until the member has one. The portal's My container page sets it: the password goes to
``~/.vnc/passwd`` through TigerVNC's own ``vncpasswd -f`` (run as the container's user), and the user's
``vncserver@:1`` unit is enabled and started (lingering keeps it running without a login, and starts it
again at every boot).

Why a VNC password of its own, not the container password: VNC's "VNC authentication" uses only the first
8 characters of a password, answers a DES challenge that anyone who records the connection can try
passwords against offline, and keeps the password reversibly in ``~/.vnc/passwd``. Given the container
password, it would hand out its first 8 characters through the weakest part of the system. So the VNC
password is separate and exactly 8 printable ASCII characters (VNC uses no more; VNC clients send Latin-1
bytes, so other characters would not match from every client), and must also pass the portal's rules.

A password set again later takes effect at the next VNC connection (the server reads the file each time);
a running VNC desktop is not restarted, so the member's open windows stay.
"""

from __future__ import annotations

import secrets

from labgpu.errors import N_, BadInput, Conflict
from labgpu.runtime.client import RuntimeClient
from labgpu.services.context import Services
from labgpu.services.hosts import services_for
from labgpu.services.members._records import ProvisionError, load_member
from labgpu.store.models import PortPurpose

VNC_PASSWORD_LENGTH = 8
VNC_DISPLAY = ":1"

# $1 user, $2 the password file (root's, 0600; removed whatever happens), $3 the display (":1").
# vncpasswd runs as the user and writes into the user's own folder: root only opens the password file for
# it, so a link planted in ~/.vnc cannot make root write anywhere. Idempotent.
VNC_SCRIPT = r"""
set -u
user="$1"; secret="$2"; display="$3"
fail() { rm -f "$secret"; echo "$*" >&2; exit 1; }
command -v vncpasswd >/dev/null 2>&1 || fail "no-vnc: TigerVNC's vncpasswd is not installed"
[ -f /etc/systemd/user/vncserver@.service ] || fail "no-vnc: no vncserver@.service user unit"
uid=$(id -u "$user" 2>/dev/null) || fail "no user $user in the container"
runuser -u "$user" -- sh -c 'umask 077 && mkdir -p "$HOME/.vnc" && vncpasswd -f >"$HOME/.vnc/passwd.new" && mv -f "$HOME/.vnc/passwd.new" "$HOME/.vnc/passwd"' <"$secret"
rc=$?
rm -f "$secret"
[ $rc -eq 0 ] || fail "vncpasswd failed"
# Lingering runs the user's own systemd without a login (the template turns it on; an older container may
# not have it): that systemd runs the VNC server.
if [ ! -e "/var/lib/systemd/linger/$user" ]; then
  loginctl enable-linger "$user" || fail "loginctl enable-linger $user failed"
fi
i=0
while [ ! -S "/run/user/$uid/systemd/private" ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i+1)); done
[ -S "/run/user/$uid/systemd/private" ] || fail "the systemd of $user is not running (no /run/user/$uid)"
export XDG_RUNTIME_DIR="/run/user/$uid"
[ -S "$XDG_RUNTIME_DIR/bus" ] && export DBUS_SESSION_BUS_ADDRESS="unix:path=$XDG_RUNTIME_DIR/bus"
unit="vncserver@$display.service"
if ! runuser -u "$user" -- systemctl --user enable --now "$unit" 2>&1; then
  runuser -u "$user" -- systemctl --user status --no-pager --lines 15 "$unit" 2>&1 | tail -n 20 >&2
  fail "starting $unit failed"
fi
runuser -u "$user" -- systemctl --user is-active --quiet "$unit" || fail "$unit is not running"
exit 0
"""


def check_vnc_password(password: str) -> None:
    """Refuse what VNC would cut or garble (see the module). Raises BadInput."""
    if len(password) != VNC_PASSWORD_LENGTH:
        raise BadInput(
            N_("a VNC password has exactly %(length)s characters: VNC uses no more, and fewer are weaker"),
            values={"length": VNC_PASSWORD_LENGTH},
        )
    if not all(" " <= c <= "~" for c in password):
        raise BadInput(
            N_(
                "a VNC password uses only letters, digits and the punctuation of an English keyboard "
                "(VNC clients send other characters differently)"
            )
        )


def write_vnc_password(runtime: RuntimeClient, container: str, *, user: str, password: str) -> None:
    """Write the user's VNC password and enable and start their VNC desktop (display :1). One exec; safe to
    repeat. The container must be running. Raises Conflict when its template has no VNC server,
    ProvisionError with the container's words when a step fails. Waits for the server to start."""
    check_vnc_password(password)
    secret = f"/root/.labgpu-vnc-{secrets.token_hex(4)}"
    runtime.instances.push_file(container, secret, f"{password}\n".encode(), mode=0o600)
    result = runtime.instances.exec(
        container, ["sh", "-c", VNC_SCRIPT, "sh", user, secret, VNC_DISPLAY], timeout=120
    )
    if result.ok:
        return
    words = (result.stderr or result.stdout).strip()
    if words.startswith("no-vnc:"):
        raise Conflict(
            N_(
                "your container has no VNC server: its template has no VNC desktop. Use the remote desktop "
                "(RDP) instead, or ask an admin for a template with VNC."
            )
        )
    raise ProvisionError(f"setting up VNC in {container} failed: {words[-300:]}")


def set_vnc_password(svc: Services, name: str, password: str) -> None:
    """Set a member's VNC password (chosen by them; see the module) and start their VNC desktop. The caller
    checks its strength with the portal's rules. Raises BadInput, NotFound, Conflict (no VNC port, the
    container not running, no VNC server in it), ProvisionError. Audited without the password."""
    check_vnc_password(password)
    with svc.session() as session:
        member = load_member(session, name)
        container = member.container or name
        host_svc = services_for(svc, member.host)
        has_port = any(p.purpose == PortPurpose.VNC for p in member.port_maps)
    if not has_port:
        raise Conflict(
            N_(
                "%(name)s's container has no VNC port; an admin adds one with `labgpu member set %(name)s "
                "--vnc`"
            ),
            values={"name": name},
        )
    if host_svc.runtime.instances.state(container).status != "Running":
        raise Conflict(N_("%(name)s's container is not running; start it first"), values={"name": name})
    write_vnc_password(host_svc.runtime, container, user=svc.settings.container_user, password=password)
    with svc.session() as session:
        svc.audit(session, "member.vnc_password", name)
