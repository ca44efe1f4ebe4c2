"""The steps of a template build, as data: what :mod:`labgpu.services.templates._build` runs in the
builder container for a spec.

:func:`plan_steps` is a pure function of the spec, the base's distribution and whether the builder
has a network: commands are argument lists, files are bytes, never a shell string built from the
spec. The few fixed shell scripts here take the spec's values as positional arguments.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from labgpu.errors import BadInput
from labgpu.services.templates._spec import Apt, Desktop, ScriptCommand, TemplateSpec
from labgpu.services.templates._spec_loading import LoadedSpec

# Re-exported: the build and the tests know these as the steps' own.
from labgpu.services.templates._step_types import Action as Action
from labgpu.services.templates._step_types import Download as Download
from labgpu.services.templates._step_types import HostBundle as HostBundle
from labgpu.services.templates._step_types import Push as Push
from labgpu.services.templates._step_types import Run as Run
from labgpu.services.templates._step_types import Step as Step
from labgpu.services.templates._steps_packages import package_steps
from labgpu.system import base_image

WORK_DIR = "/run/labgpu-build"  # tmpfs in the builder: gone when it stops, never in the image
RUNNER = f"{WORK_DIR}/run-step"
NET_SCRIPT = f"{WORK_DIR}/network"
USER_SCRIPT = f"{WORK_DIR}/user"
CLEAN_SCRIPT = f"{WORK_DIR}/clean"
SSHD_DROPIN = "/etc/ssh/sshd_config.d/00-labgpu-template.conf"
VNC_UNIT = "/etc/systemd/user/vncserver@.service"
BUILDER_LABEL = "user.labgpu.builder"
BUILDER_TEMPLATE_LABEL = "user.labgpu.builder-template"
BASE_LABEL = "labgpu.builder-base"
TAIL_LINES = 25

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive", "APT_LISTCHANGES_FRONTEND": "none"}

RUNNER_TEXT = """\
#!/bin/sh
# labgpu template build: run one command; its output goes to a log that labgpu reads while it runs.
log="$1"; shift
exec "$@" >>"$log" 2>&1 </dev/null
"""

NET_SCRIPT_TEXT = """\
#!/bin/sh
# labgpu template build: wait for the builder's network and give apt a resolver. Leaves nothing in the
# template: a DHCP file goes to /run, and the clean step puts resolv.conf back.
route() { ip -4 route show default 2>/dev/null | head -n 1; }
i=0
while [ -z "$(route)" ] && [ $i -lt 5 ]; do sleep 1; i=$((i+1)); done
if [ -z "$(route)" ] && [ -x /lib/systemd/systemd-networkd ]; then
  if ! ls /etc/systemd/network/*.network /run/systemd/network/*.network >/dev/null 2>&1; then
    mkdir -p /run/systemd/network
    printf '[Match]\\nName=eth0\\n\\n[Network]\\nDHCP=yes\\n' >/run/systemd/network/90-labgpu-build.network
  fi
  # Without udev (a minbase root) networkd waits for udev forever ("pending"): record the NIC as
  # set up in udev's runtime database, which lives in /run too.
  if [ ! -e /run/udev/control ] && [ -r /sys/class/net/eth0/ifindex ]; then
    mkdir -p /run/udev/data
    db="/run/udev/data/n$(cat /sys/class/net/eth0/ifindex)"
    [ -e "$db" ] || echo "I:1" >"$db"
  fi
  systemctl restart systemd-networkd
fi
i=0
while [ -z "$(route)" ] && [ $i -lt 60 ]; do sleep 1; i=$((i+1)); done
gw=$(route | awk '{print $3}')
if [ -z "$gw" ]; then
  echo "the builder got no network: no default route after 65 s"
  ip addr
  exit 1
fi
echo "network: default route via $gw"
if ! grep -q '^nameserver' /etc/resolv.conf 2>/dev/null; then
  if [ -e /etc/resolv.conf ] || [ -L /etc/resolv.conf ]; then
    cp -P /etc/resolv.conf /run/labgpu-build/resolv.conf.orig
  fi
  rm -f /etc/resolv.conf
  echo "nameserver $gw" >/etc/resolv.conf
  echo "resolver for the build: $gw"
fi
"""

USER_SCRIPT_TEXT = """\
#!/bin/sh
# labgpu template build: make sure the login user exists: user-script NAME UID SHELL GROUP,GROUP
set -e
name="$1"; uid="$2"; shell="$3"; groups="$4"
if id -u "$name" >/dev/null 2>&1; then
  have=$(id -u "$name")
  if [ "$have" != "$uid" ]; then
    echo "user $name exists with uid $have, not $uid as the spec says"
    exit 1
  fi
  usermod -s "$shell" "$name"
  echo "user $name (uid $uid) exists"
else
  useradd --create-home --user-group --uid "$uid" --shell "$shell" "$name"
  echo "created user $name (uid $uid)"
fi
if [ -n "$groups" ]; then
  usermod -a -G "$groups" "$name"
  echo "groups: $(id -nG "$name")"
fi
"""

CLEAN_SCRIPT_TEXT = """\
#!/bin/sh
# labgpu template build: leave nothing build- or machine-specific in the template.
if command -v apt-get >/dev/null; then apt-get clean; fi
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /tmp/* /var/tmp/* /root/.cache /root/.bash_history
rm -f /etc/ssh/ssh_host_*
if [ -e /run/labgpu-build/resolv.conf.orig ] || [ -L /run/labgpu-build/resolv.conf.orig ]; then
  rm -f /etc/resolv.conf
  cp -P /run/labgpu-build/resolv.conf.orig /etc/resolv.conf
fi
: >/etc/machine-id
find /var/log -type f -exec truncate -s 0 {} +
echo "cleaned apt caches, host keys, machine id and logs"
"""

DESKTOP_PACKAGES = {
    "xfce": ("xfce4", "xfce4-terminal", "dbus-x11"),
    "lxde": ("lxde-core", "lxterminal", "dbus-x11"),
}
DESKTOP_SESSION = {"xfce": "startxfce4", "lxde": "startlxde"}
XRDP_PACKAGES = ("xrdp", "xorgxrdp")
VNC_PACKAGES = ("tigervnc-standalone-server", "tigervnc-common")
# vncpasswd moved to tigervnc-tools with TigerVNC 1.12 (bookworm, jammy); older releases have no such package.
VNC_TOOLS_MISSING = frozenset({"stretch", "buster", "bullseye", "bionic", "focal"})
CHINESE_PACKAGES = (
    "locales",
    "fonts-noto-cjk",
    "fonts-wqy-zenhei",
    "fcitx5",
    "fcitx5-chinese-addons",
    "fcitx5-frontend-gtk3",
    "fcitx5-frontend-qt5",
)

VNC_UNIT_TEXT = """\
[Unit]
Description=TigerVNC desktop on display %i (labgpu)
After=network.target

[Service]
Type=forking
ExecStartPre=-/usr/bin/vncserver -kill %i
ExecStart=/usr/bin/vncserver %i -localhost no -geometry {geometry}
ExecStop=/usr/bin/vncserver -kill %i

[Install]
WantedBy=default.target
"""

VNC_XSTARTUP = """\
#!/bin/sh
# labgpu: the VNC desktop runs the same session as xrdp.
unset SESSION_MANAGER DBUS_SESSION_BUS_ADDRESS
exec /bin/sh "$HOME/.xsession"
"""


# Steps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OsRelease:
    """What /etc/os-release says about the builder's distribution."""

    id: str
    codename: str
    id_like: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        """debian or ubuntu (Ubuntu derivatives count as ubuntu), else the id."""
        if self.id == "ubuntu" or "ubuntu" in self.id_like:
            return "ubuntu"
        if self.id == "debian" or "debian" in self.id_like:
            return "debian"
        return self.id

    @classmethod
    def parse(cls, text: str) -> OsRelease:
        values: dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip("\"'")
        codename = values.get("VERSION_CODENAME") or values.get("UBUNTU_CODENAME") or ""
        return cls(
            id=values.get("ID", "linux"), codename=codename, id_like=tuple(values.get("ID_LIKE", "").split())
        )


def guess_os_release(spec: TemplateSpec) -> OsRelease:
    """What the base will probably be, before it exists (only the plan's shape depends on it)."""
    if spec.base.debootstrap is not None:
        is_ubuntu = "ubuntu" in spec.base.debootstrap.mirror
        return OsRelease(id="ubuntu" if is_ubuntu else "debian", codename=spec.base.debootstrap.suite)
    return OsRelease(id="ubuntu" if "ubuntu" in (spec.base.image or "") else "debian", codename="")


def apt_sources(os_release: OsRelease, apt: Apt) -> str:
    """The sources.list for ``apt.mirror`` on this distribution. Raises BadInput when it is not
    Debian or Ubuntu, or has no codename."""
    if apt.mirror is None:
        raise ValueError("no apt mirror")
    family, codename = os_release.family, os_release.codename
    if family not in ("debian", "ubuntu") or not codename:
        raise BadInput(
            f"apt.mirror: cannot write apt sources for {os_release.id} {codename or '(no codename)'}",
            hint="leave apt.mirror out and set the sources with a files: entry or a command",
        )
    if family == "ubuntu":
        components = " ".join(apt.components or ["main", "restricted", "universe", "multiverse"])
        security = apt.security_mirror or apt.mirror
        suites = [
            (apt.mirror, codename),
            *((apt.mirror, f"{codename}-{s}") for s in ("updates", "backports")),
        ]
        suites.append((security, f"{codename}-security"))
    else:
        components = " ".join(apt.components or ["main"])
        if apt.security_mirror:
            security = apt.security_mirror
        elif apt.mirror.endswith("/debian"):
            security = apt.mirror + "-security"
        else:
            security = "http://security.debian.org/debian-security"
        suites = [(apt.mirror, codename)]
        if codename not in ("sid", "unstable"):
            suites += [(apt.mirror, f"{codename}-updates"), (security, f"{codename}-security")]
    lines = ["# Written by labgpu (template spec: apt.mirror)."]
    lines += [f"deb {url} {suite} {components}" for url, suite in suites]
    return "\n".join(lines) + "\n"


def sshd_dropin(spec: TemplateSpec) -> str:
    """The template's sshd settings (a drop-in read before sshd_config's own lines, so it wins)."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    ssh = spec.ssh
    return (
        f"# labgpu template {spec.name}: sshd settings from the spec.\n"
        f"PasswordAuthentication {yes(ssh.password_authentication)}\n"
        f"KbdInteractiveAuthentication {yes(ssh.password_authentication)}\n"
        f"PermitRootLogin {'prohibit-password' if ssh.permit_root_login else 'no'}\n"
        f"X11Forwarding {yes(ssh.x11_forwarding)}\n"
    )


def xsession(desktop: Desktop) -> str:
    """~/.xsession: what xrdp (through Xsession) and the VNC xstartup start."""
    lines = ["#!/bin/sh", "# labgpu: the remote desktop session."]
    if desktop.chinese:
        lines += [
            "export LANG=zh_CN.UTF-8 LANGUAGE=zh_CN:zh",
            "export GTK_IM_MODULE=fcitx QT_IM_MODULE=fcitx XMODIFIERS=@im=fcitx",
            "fcitx5 -d >/dev/null 2>&1 &",
        ]
    lines.append(f"exec {DESKTOP_SESSION[desktop.environment]}")
    return "\n".join(lines) + "\n"


def _install(packages: Sequence[str], apt: Apt, env: Mapping[str, str]) -> Run:
    argv = ["apt-get", "install", "-y", "-o", "Dpkg::Options::=--force-confold"]
    if not apt.install_recommends:
        argv.append("--no-install-recommends")
    return Run(tuple([*argv, *packages]), env)


def plan_steps(loaded: LoadedSpec, *, os_release: OsRelease, network: bool) -> list[Step]:
    """The steps that turn the base into the template, in order. Pure: the same spec, distribution and
    network give the same plan. Its length does not depend on ``os_release``."""
    spec = loaded.spec
    env = dict(spec.environment)
    apt_env = {**APT_ENV, **env}
    user = spec.user.name
    steps: list[Step] = []
    updated = False

    def apt_update() -> tuple[Action, ...]:
        nonlocal updated
        if updated:
            return ()
        updated = True
        return (Run(("apt-get", "update"), apt_env),)

    if network:
        steps.append(Step("network", "wait for the builder's network", (Run(("/bin/sh", NET_SCRIPT)),)))
    if spec.apt.mirror is not None:
        sources = apt_sources(os_release, spec.apt) if os_release.codename else "# unknown until the build\n"
        steps.append(
            Step(
                "apt mirror",
                f"use the apt mirror {spec.apt.mirror}",
                (
                    Run(
                        (
                            "rm",
                            "-f",
                            "/etc/apt/sources.list.d/debian.sources",
                            "/etc/apt/sources.list.d/ubuntu.sources",
                        )
                    ),
                    Push("/etc/apt/sources.list", sources.encode()),
                ),
            )
        )
    packages = list(spec.packages)
    if spec.base.image is not None:
        # A server image may lack sshd and sudo; the debootstrap base always has them.
        packages += ["openssh-server"] + (["sudo"] if "sudo" in spec.user.groups else [])
    packages = list(dict.fromkeys(packages))
    if packages:
        steps.append(
            Step(
                "packages",
                f"install {len(packages)} package{'s' if len(packages) != 1 else ''}",
                (*apt_update(), _install(packages, spec.apt, apt_env)),
                needs_network=True,
            )
        )
    steps.append(
        Step(
            "user",
            f"login user {user} (uid {spec.user.uid})",
            (
                Run(
                    (
                        "/bin/sh",
                        USER_SCRIPT,
                        user,
                        str(spec.user.uid),
                        spec.user.shell,
                        ",".join(spec.user.groups),
                    )
                ),
            ),
        )
    )
    steps.append(
        Step(
            "sshd",
            "sshd settings and per-container host keys",
            (
                Run(("mkdir", "-p", "/etc/ssh/sshd_config.d")),
                Push(SSHD_DROPIN, sshd_dropin(spec).encode()),
                Push(f"/etc/systemd/system/{base_image.KEYGEN_UNIT}", base_image.KEYGEN_UNIT_TEXT.encode()),
                Run(("systemctl", "enable", base_image.KEYGEN_UNIT, "ssh.service")),
            ),
        )
    )
    if spec.desktop is not None:
        steps.append(_desktop_step(spec, spec.desktop, os_release, apt_update(), apt_env))
    if spec.gcc is not None:
        gcc = spec.gcc
        versions = sorted(gcc.versions)
        actions: list[Action] = [
            *apt_update(),
            _install([p for v in versions for p in (f"gcc-{v}", f"g++-{v}")], spec.apt, apt_env),
        ]
        for v in versions:
            priority = 100 if v == gcc.selected else v
            actions.append(
                Run(
                    (
                        "update-alternatives",
                        "--install",
                        "/usr/bin/gcc",
                        "gcc",
                        f"/usr/bin/gcc-{v}",
                        str(priority),
                        "--slave",
                        "/usr/bin/g++",
                        "g++",
                        f"/usr/bin/g++-{v}",
                        "--slave",
                        "/usr/bin/gcov",
                        "gcov",
                        f"/usr/bin/gcov-{v}",
                    )
                )
            )
        actions.append(Run(("update-alternatives", "--set", "gcc", f"/usr/bin/gcc-{gcc.selected}")))
        steps.append(
            Step(
                "gcc",
                f"gcc/g++ {', '.join(map(str, versions))} (default {gcc.selected})",
                tuple(actions),
                needs_network=True,
            )
        )
    if spec.miniconda is not None:
        conda = spec.miniconda
        installer = f"{WORK_DIR}/miniconda.sh"
        fetch: Action = (
            Download(conda.installer, installer, conda.sha256)
            if conda.is_url
            else Push(installer, source=loaded.spec_dir / conda.installer, mode=0o755)
        )
        actions = [fetch, Run(("bash", installer, "-b", "-p", conda.prefix), env)]
        if conda.condarc is not None:
            actions.append(Push(f"{conda.prefix}/.condarc", yaml.safe_dump(conda.condarc).encode()))
        actions.append(
            Run(("ln", "-sf", f"{conda.prefix}/etc/profile.d/conda.sh", "/etc/profile.d/conda.sh"))
        )
        owner = conda.owner or user
        if owner != "root":
            actions.append(Run(("chown", "-R", f"{owner}:{owner}", conda.prefix)))
        steps.append(Step("miniconda", f"Miniconda in {conda.prefix}", tuple(actions)))
    steps += package_steps(spec, env, WORK_DIR)
    if spec.files:
        actions = []
        for item in spec.files:
            actions.append(Run(("mkdir", "-p", posixpath.dirname(item.dest) or "/")))
            actions.append(
                Push(item.dest, source=loaded.spec_dir / item.src, mode=int(item.mode, 8), owner=item.owner)
            )
        steps.append(
            Step("files", f"copy {len(spec.files)} file{'s' if len(spec.files) != 1 else ''}", tuple(actions))
        )
    for index, command in enumerate(spec.commands):
        if isinstance(command, ScriptCommand):
            target = f"{WORK_DIR}/scripts/{index + 1}-{posixpath.basename(command.script)}"
            run = Run((target, *command.args), env)
            actions = [
                Run(("mkdir", "-p", f"{WORK_DIR}/scripts")),
                Push(target, source=loaded.spec_dir / command.script, mode=0o755),
                run,
            ]
            title = f"script {command.script}"
        else:
            run = Run(tuple(command), env)
            actions = [run]
            title = run.describe()
        steps.append(Step(f"command {index + 1}", title, tuple(actions)))
    steps.append(Step("clean", "clean caches, host keys and logs", (Run(("/bin/sh", CLEAN_SCRIPT)),)))
    return steps


def _desktop_step(
    spec: TemplateSpec,
    desktop: Desktop,
    os_release: OsRelease,
    update: tuple[Action, ...],
    apt_env: Mapping[str, str],
) -> Step:
    user = spec.user.name
    home = f"/home/{user}"
    packages = list(DESKTOP_PACKAGES[desktop.environment])
    if desktop.xrdp:
        packages += XRDP_PACKAGES
    if desktop.vnc:
        packages += VNC_PACKAGES
        if os_release.codename not in VNC_TOOLS_MISSING:
            packages.append("tigervnc-tools")
    if desktop.chinese:
        packages += CHINESE_PACKAGES
        if os_release.family == "ubuntu":
            packages.append("language-pack-zh-hans")
    session = xsession(desktop).encode()
    actions: list[Action] = [
        *update,
        _install(packages, spec.apt, apt_env),
        Push("/etc/skel/.xsession", session, mode=0o755),
        Push(f"{home}/.xsession", session, mode=0o755, owner=user),
    ]
    if desktop.chinese:
        actions += [
            Run(("localedef", "-i", "zh_CN", "-f", "UTF-8", "zh_CN.UTF-8")),
            Run(("localedef", "-i", "en_US", "-f", "UTF-8", "en_US.UTF-8")),
        ]
    if desktop.xrdp:
        # xrdp reads its TLS key through the ssl-cert group.
        actions += [
            Run(("usermod", "-a", "-G", "ssl-cert", "xrdp")),
            Run(("systemctl", "enable", "xrdp.service")),
        ]
    if desktop.vnc:
        actions += [
            Push(VNC_UNIT, VNC_UNIT_TEXT.format(geometry=desktop.vnc_geometry).encode()),
            Run(("install", "-d", "-m", "0755", "/etc/skel/.vnc")),
            Push("/etc/skel/.vnc/xstartup", VNC_XSTARTUP.encode(), mode=0o755),
            Run(("install", "-d", "-m", "0700", "-o", user, "-g", user, f"{home}/.vnc")),
            Push(f"{home}/.vnc/xstartup", VNC_XSTARTUP.encode(), mode=0o755, owner=user),
            # Lingering starts the member's own units (vncserver@:1 once enabled) at boot, without a login.
            Run(("mkdir", "-p", "/var/lib/systemd/linger")),
            Run(("touch", f"/var/lib/systemd/linger/{user}")),
        ]
    parts = (
        [desktop.environment.upper()] + (["xrdp"] if desktop.xrdp else []) + (["VNC"] if desktop.vnc else [])
    )
    if desktop.chinese:
        parts.append("Chinese fonts and input")
    return Step("desktop", " + ".join(parts), tuple(actions), needs_network=True)
