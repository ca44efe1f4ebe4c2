"""Pure rules about members: names, limits, GPU requests, SSH keys, uid and port allocation."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from labgpu.errors import N_, BadInput, Exhausted

# A member name is both a Linux user name and an LXD/Incus instance name:
# lower-case letters, digits and single hyphens, starting with a letter,
# not ending with a hyphen, at most 32 characters.
_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9]|-(?=[a-z0-9])){1,31}\Z")

RESERVED_NAMES = frozenset(
    {
        "root", "admin", "administrator", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail",
        "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "systemd-network",
        "systemd-resolve", "systemd-timesync", "messagebus", "sshd", "ubuntu", "debian", "lxd", "incus",
        "lxc", "labgpu", "postgres", "sudo", "wheel", "staff", "users", "docker", "host", "localhost",
        "default", "all", "none", "api", "static", "login", "logout", "apply", "healthz", "metrics",
    }
)  # fmt: skip


def validate_member_name(name: str) -> str:
    """Return ``name`` if it can be a member name; raise BadInput saying why not."""
    if not isinstance(name, str) or not name:
        raise BadInput(N_("a member name is required"))
    if len(name) > 32:
        raise BadInput(f"member name {name[:40]!r} is too long (at most 32 characters)")
    if not _NAME_RE.match(name):
        raise BadInput(
            f"invalid member name {name!r}: use 2-32 lower-case letters, digits and single hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    if name in RESERVED_NAMES:
        raise BadInput(f"member name {name!r} is reserved; choose another")
    return name


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str, *, what: str = "size") -> int:
    """Bytes from "8GiB", "8G", "512MiB", "1.5TiB" (binary units, as the seeds use them)."""
    m = _SIZE_RE.match(str(text))
    if not m:
        raise BadInput(f"invalid {what} {text!r}: use a number with a unit, e.g. 16GiB or 512MiB")
    number, unit = float(m.group(1)), (m.group(2) or "").upper()
    value = int(number * _UNITS[unit[:1] if unit else ""])
    if value <= 0:
        raise BadInput(f"{what} must be more than zero")
    return value


def format_size(value: int) -> str:
    """The LXD form of a byte count: the largest binary unit that divides it ("16GiB")."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return f"{value}B"


def validate_cpu(cpu: int) -> int:
    if cpu < 1 or cpu > 1024:
        raise BadInput(f"invalid CPU limit {cpu}: give a number of cores between 1 and 1024")
    return cpu


@dataclass(frozen=True)
class GpuRequest:
    """Which GPUs a member's container gets: every GPU, none, or chosen indexes."""

    mode: str  # "all", "none", "indexes"
    indexes: tuple[int, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(i) for i in self.indexes) if self.mode == "indexes" else self.mode


def parse_gpu_request(text: str) -> GpuRequest:
    """Parse ``all``, ``none`` or comma-separated GPU indexes (``0,2``)."""
    value = str(text).strip().lower()
    if value in ("all", "none"):
        return GpuRequest(value)
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise BadInput(f"invalid GPU choice {text!r}: use all, none, or indexes such as 0,2")
    indexes = tuple(sorted({int(p) for p in parts}))
    if any(i > 63 for i in indexes):
        raise BadInput(f"invalid GPU index in {text!r}")
    return GpuRequest("indexes", indexes)


_KEY_TYPES = frozenset(
    {
        "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)  # fmt: skip


@dataclass(frozen=True)
class PublicKey:
    type: str
    blob: str
    comment: str
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it

    @property
    def line(self) -> str:
        return f"{self.type} {self.blob}" + (f" {self.comment}" if self.comment else "")


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line; raise BadInput for anything else (private keys included)."""
    line = str(text).strip()
    if "PRIVATE KEY" in line:
        raise BadInput("that is a PRIVATE key; give the public key (the .pub file)")
    if "\n" in line or "\r" in line:
        raise BadInput("give one public key per line")
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] not in _KEY_TYPES:
        raise BadInput(
            f"not an OpenSSH public key: {line[:40]!r}... (expected e.g. 'ssh-ed25519 AAAA... you@pc')"
        )
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadInput("the public key's base64 part is damaged") from None
    # The blob starts with its own type name, length-prefixed.
    n = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if n <= 0 or raw[4 : 4 + n].decode("ascii", "replace") != parts[0]:
        raise BadInput("the public key's type and contents do not match")
    comment = parts[2].strip() if len(parts) > 2 else ""
    if any(ord(ch) < 32 for ch in comment):
        raise BadInput("the public key's comment contains control characters")
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    return PublicKey(parts[0], parts[1], comment, f"SHA256:{digest}")


def allocate_uid(used: Iterable[int], *, base: int, count: int) -> int:
    """The lowest uid in [base, base+count) not in ``used``; Exhausted when none is left."""
    taken = set(used)
    for uid in range(base, base + count):
        if uid not in taken:
            return uid
    raise Exhausted(f"no free member uid left in {base}-{base + count - 1}; raise uid_count in the settings")


def allocate_ports(
    used: Iterable[int],
    *,
    start: int,
    end: int,
    count: int,
    available: Callable[[int], bool] | None = None,
) -> list[int]:
    """The ``count`` lowest free ports in [start, end]; Exhausted when not enough are left.

    ``available`` is asked about each port not in ``used`` (say, whether some other program on the host
    already listens there); a port it refuses is skipped."""
    taken = set(used)
    free: list[int] = []
    for port in range(start, end + 1):
        if port not in taken and (available is None or available(port)):
            free.append(port)
            if len(free) == count:
                return free
    raise Exhausted(
        f"the port range {start}-{end} is exhausted ({count} port(s) needed); "
        "widen port_range_start/port_range_end in the settings"
    )
