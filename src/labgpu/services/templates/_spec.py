"""Template specs: the YAML file an admin writes to describe a template, and its validation.

A spec is read with a YAML loader that keeps each node's line, validated by pydantic models that
forbid unknown keys, and every problem is reported as ``FILE:LINE: message`` (an unknown key comes
with a "did you mean" when one is close). Nothing is built from a spec that did not validate.

The reference for admins, with every key, is docs/admin/templates.md; the models below are the
source of truth for it. Reading a file into these models is in ``_spec_loading``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from labgpu.errors import BadInput
from labgpu.services.templates._spec_packages import Npm, Pip, app_entry
from labgpu.system import base_image

NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]\Z")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}(=[A-Za-z0-9.+:~-]{1,100}|/[a-z0-9-]{1,40})?\Z")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")
URL_RE = re.compile(r"^https?://[^\s'\"]+\Z")
MIRROR_RE = re.compile(r"^(https?|file)://[^\s'\"]+\Z")
SUITE_RE = re.compile(r"^[a-z][a-z0-9.-]{0,31}\Z")
COMPONENT_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}\Z")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
REMOTE_IMAGE_RE = re.compile(
    r"^(?P<remote>[a-z][a-z0-9-]{0,31}):(?P<alias>[A-Za-z0-9][A-Za-z0-9._/-]{0,127})\Z"
)
MODE_RE = re.compile(r"^0?[0-7]{3,4}\Z")
GEOMETRY_RE = re.compile(r"^[1-9][0-9]{2,4}x[1-9][0-9]{2,4}\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")

#: Simplestreams image servers a spec may name without declaring them under ``base.remotes``.
BUILTIN_REMOTES = {
    "images": "https://images.linuxcontainers.org",
    "ubuntu": "https://cloud-images.ubuntu.com/releases",
    "ubuntu-daily": "https://cloud-images.ubuntu.com/daily",
}


class SpecError(BadInput):
    """A template spec is malformed. ``problems`` holds ``(line, text)`` pairs and ``lines`` one
    ``FILE:LINE: text`` per problem; the message is the first of them (and how many more there are)."""

    reason = "template-spec"

    def __init__(self, source: str, problems: Sequence[tuple[int, str]]) -> None:
        self.source = source
        self.problems = sorted(problems)
        self.lines = [f"{source}:{line}: {text}" for line, text in self.problems]
        more = len(self.lines) - 1
        message = self.lines[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")
        super().__init__(
            message,
            hint="see docs/admin/templates.md for every key of a spec",
            log_message="\n".join(self.lines),
        )


# The spec's models ---------------------------------------------------------------------------------


class _Model(BaseModel):
    # strict: a YAML number is not silently taken for a string, nor "yes" for a boolean.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _local_path(value: str, info: ValidationInfo, *, what: str) -> str:
    """Check that a path relative to the spec's folder names an existing file (when the folder is known)."""
    if not value or "\x00" in value:
        raise ValueError(f"{what} must name a file")
    spec_dir = (info.context or {}).get("spec_dir")
    if spec_dir is not None:
        path = Path(spec_dir) / value
        if not path.is_file():
            raise ValueError(f"{what} {value!r} does not exist (paths are relative to the spec's folder)")
    return value


def _absolute_path(value: str, *, what: str) -> str:
    if not value.startswith("/") or "\x00" in value or any(p == ".." for p in value.split("/")):
        raise ValueError(f"{what} must be an absolute path without '..', not {value!r}")
    return value


class Debootstrap(_Model):
    """Build the base root filesystem on the host with debootstrap (no image server needed)."""

    suite: str = base_image.DEFAULT_SUITE
    mirror: str = base_image.DEFAULT_MIRROR
    variant: Literal["minbase", "buildd", "default"] = "minbase"
    include: list[str] = Field(default_factory=list)

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str) -> str:
        if not SUITE_RE.match(v):
            raise ValueError(f"invalid suite name {v!r} (e.g. bookworm, jammy)")
        return v

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, v: str) -> str:
        if not MIRROR_RE.match(v):
            raise ValueError(f"invalid mirror {v!r}: expected an http://, https:// or file:// URL")
        return v.rstrip("/")

    @field_validator("include")
    @classmethod
    def _include(cls, v: list[str]) -> list[str]:
        for package in v:
            if not base_image._PACKAGE_RE.match(package):
                raise ValueError(f"invalid package name {package!r}")
        return v


class Base(_Model):
    """Where the root filesystem comes from: exactly one of ``image`` and ``debootstrap``."""

    image: str | None = None
    remotes: dict[str, str] = Field(default_factory=dict)
    debootstrap: Debootstrap | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_debootstrap(cls, data: Any) -> Any:
        # "debootstrap:" with nothing under it means all the defaults.
        if isinstance(data, dict) and "debootstrap" in data and data["debootstrap"] is None:
            return {**data, "debootstrap": {}}
        return data

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not REMOTE_IMAGE_RE.match(v):
            raise ValueError(f"image must be REMOTE:ALIAS, e.g. images:debian/12, not {v!r}")
        return v

    @field_validator("remotes")
    @classmethod
    def _remotes(cls, v: dict[str, str]) -> dict[str, str]:
        for name, url in v.items():
            if not re.match(r"^[a-z][a-z0-9-]{0,31}\Z", name):
                raise ValueError(f"invalid remote name {name!r}")
            if not URL_RE.match(url):
                raise ValueError(f"remote {name}: expected an https:// (or http://) URL, not {url!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Base:
        if (self.image is None) == (self.debootstrap is None):
            raise ValueError("give exactly one of 'image' (REMOTE:ALIAS) and 'debootstrap'")
        if self.image is not None:
            remote = self.image.split(":", 1)[0]
            if remote not in self.remotes and remote not in BUILTIN_REMOTES:
                known = ", ".join(sorted({*BUILTIN_REMOTES, *self.remotes}))
                raise ValueError(f"unknown remote {remote!r}: declare it under base.remotes (known: {known})")
        elif self.remotes:
            raise ValueError("'remotes' only goes with 'image'")
        return self

    @property
    def remote_server(self) -> str:
        """The simplestreams URL of ``image``'s remote."""
        remote = (self.image or "").split(":", 1)[0]
        return self.remotes.get(remote) or BUILTIN_REMOTES[remote]

    @property
    def remote_alias(self) -> str:
        return (self.image or "").split(":", 1)[1]


class Apt(_Model):
    """The package mirror written into the template's sources.list, and how packages are installed."""

    mirror: str | None = None
    security_mirror: str | None = None
    components: list[str] | None = None
    install_recommends: bool = False

    @field_validator("mirror", "security_mirror")
    @classmethod
    def _mirror(cls, v: str | None) -> str | None:
        if v is not None and not MIRROR_RE.match(v):
            raise ValueError(f"invalid mirror {v!r}: expected an http://, https:// or file:// URL")
        return v.rstrip("/") if v else v

    @field_validator("components")
    @classmethod
    def _components(cls, v: list[str] | None) -> list[str] | None:
        for c in v or []:
            if not COMPONENT_RE.match(c):
                raise ValueError(f"invalid component {c!r}")
        if v is not None and not v:
            raise ValueError("components must not be empty")
        return v


class User(_Model):
    """The login user members get (``container_user`` in the settings must name it)."""

    name: str = base_image.DEFAULT_USER
    uid: int = base_image.DEFAULT_UID
    groups: list[str] = Field(default_factory=lambda: ["sudo"])
    shell: str = "/bin/bash"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not USER_RE.match(v) or v == "root":
            raise ValueError(f"invalid user name {v!r}")
        return v

    @field_validator("uid")
    @classmethod
    def _uid(cls, v: int) -> int:
        if not 1000 <= v < 60000:
            raise ValueError(f"uid {v} is outside 1000-59999")
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        for group in v:
            if not USER_RE.match(group):
                raise ValueError(f"invalid group name {group!r}")
        return v

    @field_validator("shell")
    @classmethod
    def _shell(cls, v: str) -> str:
        return _absolute_path(v, what="shell")


class Ssh(_Model):
    """sshd settings written to /etc/ssh/sshd_config.d/00-labgpu-template.conf."""

    password_authentication: bool = True
    permit_root_login: bool = False
    x11_forwarding: bool = False


class Desktop(_Model):
    """A remote desktop: XFCE or LXDE, reached with xrdp (port 3389) and/or TigerVNC (display :1, 5901)."""

    environment: Literal["xfce", "lxde"] = "xfce"
    xrdp: bool = True
    vnc: bool = False
    vnc_geometry: str = "1920x1080"
    chinese: bool = False

    @field_validator("vnc_geometry")
    @classmethod
    def _geometry(cls, v: str) -> str:
        if not GEOMETRY_RE.match(v):
            raise ValueError(f"vnc_geometry must look like 1920x1080, not {v!r}")
        return v

    @model_validator(mode="after")
    def _some_access(self) -> Desktop:
        if not (self.xrdp or self.vnc):
            raise ValueError("a desktop needs xrdp, vnc or both")
        return self


class Miniconda(_Model):
    """Miniconda from a mirror (downloaded on the host) or a local installer file."""

    installer: str
    sha256: str | None = None
    prefix: str = "/opt/miniconda3"
    owner: str | None = None
    condarc: dict[str, Any] | None = None

    @field_validator("installer")
    @classmethod
    def _installer(cls, v: str, info: ValidationInfo) -> str:
        if URL_RE.match(v):
            return v
        if "://" in v:
            raise ValueError(f"installer must be an http(s):// URL or a local file, not {v!r}")
        return _local_path(v, info, what="installer")

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not SHA256_RE.match(v.lower()):
            raise ValueError("sha256 must be 64 hexadecimal digits")
        return v.lower() if v else v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return _absolute_path(v, what="prefix")

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str | None) -> str | None:
        if v is not None and not USER_RE.match(v):
            raise ValueError(f"invalid user name {v!r}")
        return v

    @property
    def is_url(self) -> bool:
        return bool(URL_RE.match(self.installer))


class Gcc(_Model):
    """Extra gcc/g++ versions, registered with update-alternatives; ``default`` is the one selected."""

    versions: Annotated[list[int], Field(min_length=1)]
    default: int | None = None

    @field_validator("versions")
    @classmethod
    def _versions(cls, v: list[int]) -> list[int]:
        for version in v:
            if not 4 <= version <= 99:
                raise ValueError(f"gcc version {version} is not a major version like 12")
        if len(set(v)) != len(v):
            raise ValueError("gcc versions are listed twice")
        return v

    @model_validator(mode="after")
    def _default(self) -> Gcc:
        if self.default is not None and self.default not in self.versions:
            raise ValueError(f"default {self.default} is not one of the versions {self.versions}")
        return self

    @property
    def selected(self) -> int:
        return self.default if self.default is not None else max(self.versions)


class FileCopy(_Model):
    """A file from beside the spec copied into the template."""

    src: str
    dest: str
    mode: str = "0644"
    owner: str = "root"

    @field_validator("src")
    @classmethod
    def _src(cls, v: str, info: ValidationInfo) -> str:
        return _local_path(v, info, what="src")

    @field_validator("dest")
    @classmethod
    def _dest(cls, v: str) -> str:
        _absolute_path(v, what="dest")
        if v.endswith("/"):
            raise ValueError(f"dest must name a file, not a folder: {v!r}")
        return v

    @field_validator("mode", mode="before")
    @classmethod
    def _mode(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            raise ValueError("write the mode as a quoted string, e.g. '0644'")
        if isinstance(v, str) and not MODE_RE.match(v):
            raise ValueError(f"mode must be octal like '0644', not {v!r}")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        if not USER_RE.match(v):
            raise ValueError(f"invalid user name {v!r}")
        return v


class ScriptCommand(_Model):
    """A script from beside the spec, pushed into the builder and executed (it needs a #! line)."""

    script: str
    args: list[str] = Field(default_factory=list)

    @field_validator("script")
    @classmethod
    def _script(cls, v: str, info: ValidationInfo) -> str:
        _local_path(v, info, what="script")
        spec_dir = (info.context or {}).get("spec_dir")
        if spec_dir is not None:
            with (Path(spec_dir) / v).open("rb") as f:
                if f.read(2) != b"#!":
                    raise ValueError(f"script {v!r} must start with a #! line (e.g. #!/bin/sh)")
        return v


def _no_shell_string(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError(
            "a command is a list of arguments, e.g. [apt-get, install, -y, vim], or {script: file}; "
            "strings are not run through a shell"
        )
    return value


def _command_kind(value: Any) -> str:
    return "script" if isinstance(value, dict | ScriptCommand) else "args"


Command = Annotated[
    Union[  # noqa: UP007 - Tag needs the Annotated members spelled out
        Annotated[Annotated[list[str], Field(min_length=1)], Tag("args")],
        Annotated[ScriptCommand, Tag("script")],
    ],
    Discriminator(_command_kind),
    BeforeValidator(_no_shell_string),
]


class TemplateSpec(_Model):
    """A template: where its root filesystem comes from and what is done to it before it is published."""

    name: str
    description: str = ""
    base: Base
    apt: Apt = Field(default_factory=Apt)
    packages: list[str] = Field(default_factory=list)
    user: User = Field(default_factory=User)
    ssh: Ssh = Field(default_factory=Ssh)
    desktop: Desktop | None = None
    miniconda: Miniconda | None = None
    gcc: Gcc | None = None
    files: list[FileCopy] = Field(default_factory=list)
    environment: dict[str, str] = Field(default_factory=dict)
    commands: list[Command] = Field(default_factory=list)
    # issue 16: offline Python and Node packages, and the web apps the portal opens.
    pip: Pip | None = None
    npm: Npm | None = None
    apps: list[Annotated[Any, BeforeValidator(app_entry)]] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                f"invalid template name {v!r}: 2-40 lowercase letters, digits and '-', starting with a letter"
            )
        return v

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        for package in v:
            if not PACKAGE_RE.match(package):
                raise ValueError(f"invalid package name {package!r}")
        return v

    @field_validator("environment")
    @classmethod
    def _environment(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not ENV_RE.match(key):
                raise ValueError(f"invalid variable name {key!r}")
            if "\x00" in value:
                raise ValueError(f"{key}: a NUL character is not allowed")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> TemplateSpec:
        if self.miniconda is not None and self.miniconda.owner not in (None, "root", self.user.name):
            raise ValueError(
                f"miniconda.owner must be root or the template's user {self.user.name!r}, "
                f"not {self.miniconda.owner!r}"
            )
        names = [a.name for a in self.apps]
        ports = [a.port for a in self.apps]
        if len(set(names)) != len(names) or len(set(ports)) != len(ports):
            raise ValueError("apps: two apps have the same name or the same port")
        if self.pip is not None and self.pip.owner not in (None, "root", self.user.name):
            raise ValueError(f"pip.owner must be root or the template's user {self.user.name!r}")
        for item in self.files:
            if item.owner not in ("root", self.user.name):
                raise ValueError(
                    f"files: owner of {item.dest} must be root or {self.user.name!r}, not {item.owner!r}"
                )
        return self
