"""The login gateway's settings made paths, and the report its use cases fill in."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labgpu.errors import ConfigError
from labgpu.services.context import Services
from labgpu.settings import Settings
from labgpu.system.files import is_managed

_SAFE_PATH = re.compile(r"^/[A-Za-z0-9/._+-]*\Z")

CREATED = "created"
CHANGED = "changed"
UNCHANGED = "unchanged"
REMOVED = "removed"
ATTENTION = "needs-attention"


@dataclass(frozen=True)
class GatewayPaths:
    """Where the gateway's pieces live, from the settings."""

    group: str
    login: Path
    helper: Path
    sshd_config: Path
    sudoers: Path
    dir: Path
    python: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayPaths:
        return cls(
            group=settings.gateway_group,
            login=settings.gateway_login_command,
            helper=settings.gateway_helper,
            sshd_config=settings.gateway_sshd_config,
            sudoers=settings.gateway_sudoers,
            dir=settings.gateway_dir,
            python=settings.gateway_python,
        )

    @property
    def map(self) -> Path:
        return self.dir / "map.json"

    @property
    def keys(self) -> Path:
        return self.dir / "keys"

    @property
    def home(self) -> Path:
        return self.dir / "home"

    def check(self) -> None:
        """Refuse paths that could not be written safely into sshd_config and sudoers."""
        for what, path in (
            ("gateway_login_command", self.login),
            ("gateway_helper", self.helper),
            ("gateway_sshd_config", self.sshd_config),
            ("gateway_sudoers", self.sudoers),
            ("gateway_dir", self.dir),
            ("gateway_python", self.python),
        ):
            if not _SAFE_PATH.match(str(path)):
                raise ConfigError(
                    f"{what} {str(path)!r} must be an absolute path of letters, digits and / . _ + -"
                )
        if "." in self.sudoers.name or self.sudoers.name.endswith("~"):
            # sudo skips files in sudoers.d whose names contain a dot or end in ~.
            raise ConfigError(
                f"gateway_sudoers {self.sudoers}: sudo ignores names with a '.' or ending in '~'"
            )


@dataclass(frozen=True)
class Step:
    """One thing enable/disable/sync did or found."""

    step: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class GatewayReport:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)  # shown once (gateway_password_login)

    def add(self, step: str, status: str, detail: str) -> None:
        self.steps.append(Step(step, status, detail))

    @property
    def needs_attention(self) -> bool:
        return any(s.status == ATTENTION for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.status in (CREATED, CHANGED, REMOVED) for s in self.steps)

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": [s.as_dict() for s in self.steps],
            "notes": self.notes,
            "passwords": self.passwords,
            "needs_attention": self.needs_attention,
        }


def is_enabled(settings: Settings) -> bool:
    """Whether `host gateway enable` ran (its sshd drop-in is in place)."""
    return is_managed(settings.gateway_sshd_config)


def runtime_cli(svc: Services) -> str:
    """The daemon's own command-line client (lxc or incus), which the helper runs. Raises ConfigError."""
    kind = svc.runtime.server().kind
    name = "incus" if kind == "incus" else "lxc"
    cli = shutil.which(name, path="/usr/bin:/usr/sbin:/bin:/snap/bin:/usr/local/bin")
    if cli is None:
        raise ConfigError(
            f"the {name} command is not installed; the gateway runs `{name} exec` for members",
            hint="install the client of your daemon",
        )
    return cli
