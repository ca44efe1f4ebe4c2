"""Profiles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labgpu.runtime.errors import RuntimeNotFound

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    config: dict[str, str]
    devices: dict[str, dict[str, str]]
    used_by: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Profile:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            config={str(k): str(v) for k, v in (data.get("config") or {}).items()},
            devices={
                str(k): {str(a): str(b) for a, b in v.items()} for k, v in (data.get("devices") or {}).items()
            },
            used_by=tuple(data.get("used_by") or ()),
        )


class Profiles:
    def __init__(self, client: RuntimeClient) -> None:
        self._c = client

    def all(self) -> list[Profile]:
        data = self._c.get("/1.0/profiles", what="list profiles", params={"recursion": 1})
        return [Profile.from_api(d) for d in data or []]

    def get(self, name: str, *, timeout: float | None = None) -> Profile:
        """One profile. Raises RuntimeNotFound. ``timeout`` bounds the request (default: the client's)."""
        return Profile.from_api(
            self._c.get(f"/1.0/profiles/{quote(name, safe='')}", what=f"get profile {name}", timeout=timeout)
        )

    def find(self, name: str, *, timeout: float | None = None) -> Profile | None:
        """One profile, or None when there is none of that name."""
        try:
            return self.get(name, timeout=timeout)
        except RuntimeNotFound:
            return None

    def create(
        self,
        name: str,
        *,
        config: dict[str, str] | None = None,
        devices: dict[str, dict[str, str]] | None = None,
        description: str = "",
    ) -> None:
        body = {"name": name, "config": config or {}, "devices": devices or {}, "description": description}
        self._c.call("POST", "/1.0/profiles", what=f"create profile {name}", json=body)

    def replace(
        self,
        name: str,
        *,
        config: dict[str, str],
        devices: dict[str, dict[str, str]],
        description: str = "",
    ) -> None:
        """Replace the profile's config and devices (applies to every instance using it)."""
        body = {"config": config, "devices": devices, "description": description}
        self._c.call("PUT", f"/1.0/profiles/{quote(name, safe='')}", what=f"update profile {name}", json=body)

    def delete(self, name: str) -> None:
        self._c.call("DELETE", f"/1.0/profiles/{quote(name, safe='')}", what=f"delete profile {name}")
