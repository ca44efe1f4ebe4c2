"""The shipped desktop template (templates/desktop.yaml) on a test daemon, built at most once per recipe, and
the real remote-desktop clients the desktop tests log in with (FreeRDP under Xvfb, gtk-vnc's gvnccapture).

The recipe is the spec's hash and labgpu's build plan for it (:func:`recipe_key`). Its image is looked for in
this order: on the daemon (alias ``labgpu-test-desktop-<recipe>``); an export of it in the image cache
(``$LABGPU_IMAGE_CACHE/templates``, default /var/cache/labgpu/images/templates: shared by LXD and Incus and by
later runs), imported; else it is built (apt in the builder: about 5 minutes on an idle 2-core machine, 19
under a loaded one) and exported to the cache. A new recipe's image replaces the older ones. The builder gets
a NAT bridge this module makes for the build (a unique name, deleted afterwards): apt fetches from the spec's
Debian mirror through it. Without a way to that mirror the build fails, naming its step and apt's words: the
tests then fail (never skip).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.templates._build import build_template
from labgpu.services.templates._catalog import PROP_TEMPLATE, export_template, import_template
from labgpu.services.templates._spec_loading import LoadedSpec, load_spec
from labgpu.services.templates._steps import guess_os_release, plan_steps
from labgpu.system.base_image import resolve_cache_dir
from tests.conftest import LabgpuEnv, machine_lock

ROOT = Path(__file__).resolve().parents[2]
DESKTOP_TEMPLATE = "labgpu-test-desktop"
# Where the build's NAT bridges get their /24 (one free block is picked each time).
BRIDGE_SUPERNET = ipaddress.IPv4Network("10.214.0.0/16")


def desktop_spec(folder: Path) -> Path:
    """templates/desktop.yaml under the test's template name (the name is part of the recipe hash)."""
    lines = [
        f"name: {DESKTOP_TEMPLATE}" if line.startswith("name:") else line
        for line in (ROOT / "templates" / "desktop.yaml").read_text().splitlines()
    ]
    path = folder / f"{DESKTOP_TEMPLATE}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _routes_in_use() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(["ip", "-j", "-4", "route"], capture_output=True, text=True, check=True).stdout
    nets = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            nets.append(ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False))
    return nets


@contextlib.contextmanager
def nat_bridge(runtime: RuntimeClient) -> Iterator[str]:
    """A NAT bridge of the daemon's own, on a /24 no route of the host uses; deleted afterwards."""
    name = f"lgdt{secrets.token_hex(3)}"
    used = _routes_in_use()
    free = [n for n in BRIDGE_SUPERNET.subnets(new_prefix=24) if not any(n.overlaps(u) for u in used)]
    subnet = secrets.choice(free)
    runtime.networks.create(
        name,
        type="bridge",
        config={
            "ipv4.address": f"{subnet.network_address + 1}/24",
            "ipv4.nat": "true",
            "ipv6.address": "none",
        },
        description="labgpu tests: the desktop template's builder",
    )
    try:
        yield name
    finally:
        runtime.networks.delete(name)


def recipe_key(loaded: LoadedSpec) -> str:
    """The spec's hash and labgpu's plan for it (the steps and the files they write: a change to how labgpu
    builds a desktop makes a new template, where the spec hash alone would not change)."""
    steps = plan_steps(loaded, os_release=guess_os_release(loaded.spec), network=True)
    return hashlib.sha256(f"{loaded.spec_hash()}:{steps!r}".encode()).hexdigest()[:16]


def ensure_desktop_template(runtime: RuntimeClient, env: LabgpuEnv, folder: Path) -> tuple[str, float | None]:
    """The desktop template on the daemon (see the module), and the seconds a build took (None: no build).
    The image of a recipe carries the alias ``labgpu-test-desktop-<recipe key>``."""
    loaded = load_spec(desktop_spec(folder))
    key = recipe_key(loaded)
    recipe_alias = f"{DESKTOP_TEMPLATE}-{key}"
    cached = resolve_cache_dir() / "templates" / f"{recipe_alias}.tar"
    # One build per machine at a time: LXD's and Incus's runs (xdist workers) wait for each other's export.
    with machine_lock(f"desktop-template-{key}"):
        image = runtime.images.get_by_alias(recipe_alias)
        seconds = None
        if image is None:
            svc = env.services()
            if cached.is_file():
                image_fp = import_template(svc, [cached]).fingerprint
            else:
                began = time.monotonic()
                with nat_bridge(runtime) as bridge:
                    image_fp = build_template(svc, loaded, network=bridge).fingerprint
                seconds = time.monotonic() - began
                cached.parent.mkdir(parents=True, exist_ok=True)
                partial = cached.with_name(cached.name + ".part")
                partial.unlink(missing_ok=True)
                export_template(runtime, f"{DESKTOP_TEMPLATE}", partial, overwrite=True)
                partial.replace(cached)
            runtime.images.set_alias(recipe_alias, image_fp)
            image = runtime.images.get(image_fp)
            _prune_older(runtime, keep=image_fp, cached=cached)
        runtime.images.set_alias(DESKTOP_TEMPLATE, image.fingerprint)
        return DESKTOP_TEMPLATE, seconds


def _prune_older(runtime: RuntimeClient, *, keep: str, cached: Path) -> None:
    """A new recipe's image replaces the older ones (about 1 GB each) on the daemon and in the cache."""
    for image in runtime.images.all():
        if image.properties.get(PROP_TEMPLATE) == DESKTOP_TEMPLATE and image.fingerprint != keep:
            with contextlib.suppress(RuntimeNotFound):
                runtime.images.delete(image.fingerprint)
    for old in cached.parent.glob(f"{DESKTOP_TEMPLATE}-*.tar"):
        if old != cached:
            old.unlink(missing_ok=True)


# Clients -------------------------------------------------------------------------------------------------


@dataclass
class Display:
    """A private X server for a real client's window."""

    number: int

    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": f":{self.number}"}


@contextlib.contextmanager
def xvfb() -> Iterator[Display]:
    """Xvfb on a display number it picks itself (``-displayfd``), stopped afterwards."""
    if shutil.which("Xvfb") is None:
        raise AssertionError("Xvfb is missing: scripts/install-deps --test installs it (Debian's xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        with os.fdopen(read) as f:
            number = f.readline().strip()
        if not number.isdigit():
            raise AssertionError("Xvfb did not start")
        yield Display(int(number))
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@dataclass
class RdpClient:
    process: subprocess.Popen[bytes]
    log: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


# An RDP client's first words (MS-RDPBCGR 2.2.1.1): a TPKT header, an X.224 Connection Request, and an RDP
# Negotiation Request for TLS. An RDP server answers with a TPKT (version 3) holding a Connection Confirm.
_X224_CONNECTION_REQUEST = bytes.fromhex("030000130ee000000000000100080001000000")


def rdp_answers(port: int) -> bool:
    """Whether an RDP server answers on 127.0.0.1:``port``. The daemon's proxy device takes the connection
    even while xrdp in the container is not listening yet (then it closes it): only an answer counts."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_X224_CONNECTION_REQUEST)
            reply = sock.recv(64)
    except OSError:
        return False
    return len(reply) >= 11 and reply[:2] == b"\x03\x00" and reply[5] == 0xD0


def wait_rdp(port: int, timeout: float = 180) -> float:
    """Wait until xrdp answers on ``port`` (a container just made says done when sshd answers; xrdp may
    come up seconds later on a loaded machine, and xfreerdp gives up at once on a closed connection).
    Returns the seconds waited."""
    start = time.monotonic()
    while not rdp_answers(port):
        if time.monotonic() - start > timeout:
            raise AssertionError(f"no RDP server answered on port {port} within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - start


@contextlib.contextmanager
def rdp_login(display: Display, port: int, user: str, password: str, log: Path) -> Iterator[RdpClient]:
    """FreeRDP's X11 client (``xfreerdp``) connected to 127.0.0.1:``port`` as ``user`` with ``password``,
    its window on ``display``, until the block ends. The server's certificate is xrdp's own self-signed
    one: accepted as it is (``/cert:ignore``)."""
    if shutil.which("xfreerdp") is None:
        raise AssertionError("xfreerdp is missing: scripts/install-deps --test installs it (freerdp2-x11)")
    argv = [
        "xfreerdp", f"/v:127.0.0.1:{port}", f"/u:{user}", f"/p:{password}", "/cert:ignore",
        "/size:1280x800", "-grab-keyboard", "/log-level:INFO",
    ]  # fmt: skip
    waited = wait_rdp(port)
    if waited > 1:
        print(f"xrdp answered on port {port} after {waited:.1f} s")
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=display.env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        yield RdpClient(proc, log)
    finally:
        _stop(proc)


@dataclass
class Picture:
    path: Path
    width: int
    height: int
    size: int  # bytes: a black 1920x1080 screen makes a PNG of about 10 KB, the XFCE desktop one of 500 KB


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's header."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def vnc_capture(port: int, password: str, dest: Path, *, timeout: float = 90) -> Picture:
    """Log in to the VNC server on 127.0.0.1:``port`` with a real VNC client (gtk-vnc's ``gvnccapture``, the
    library of virt-manager's and GNOME's viewers; it asks for the password on a terminal, so pexpect gives
    it one) and save the screen as a PNG. Raises AssertionError with the client's words (``--debug``: the
    reason, such as "Authentication failure") when it fails."""
    if shutil.which("gvnccapture") is None:
        raise AssertionError("gvnccapture is missing: scripts/install-deps --test installs it (gvncviewer)")
    # gvnccapture takes HOST:DISPLAY and connects to port 5900 + DISPLAY.
    child = pexpect.spawn(
        "gvnccapture", ["--debug", f"127.0.0.1:{port - 5900}", str(dest)], encoding="utf-8", timeout=timeout
    )
    try:
        child.expect("Password:")
        child.sendline(password)
        child.expect(pexpect.EOF)
    except pexpect.ExceptionPexpect as exc:
        raise AssertionError(f"gvnccapture: {type(exc).__name__}: {(child.before or '')[-1500:]}") from None
    finally:
        child.close(force=True)
    words = re.sub(r"\x1b\[[0-9;]*m", "", child.before or "")
    if child.exitstatus != 0 or not dest.is_file():
        reasons = [line for line in words.splitlines() if "Error:" in line or "Unable" in line]
        raise AssertionError(f"gvnccapture failed ({child.exitstatus}): {' / '.join(reasons)[-1500:]}")
    data = dest.read_bytes()
    width, height = png_size(data)
    return Picture(dest, width, height, len(data))
