"""Networks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labgpu.runtime.errors import RuntimeNotFound

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient


@dataclass(frozen=True)
class Network:
    name: str
    type: str
    managed: bool
    config: dict[str, str]
    status: str = ""

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Network:
        return cls(
            name=str(data["name"]),
            type=str(data.get("type") or ""),
            managed=bool(data.get("managed")),
            config={str(k): str(v) for k, v in (data.get("config") or {}).items()},
            status=str(data.get("status") or ""),
        )


class Networks:
    def __init__(self, client: RuntimeClient) -> None:
        self._c = client

    def all(self) -> list[Network]:
        data = self._c.get("/1.0/networks", what="list networks", params={"recursion": 1})
        return [Network.from_api(d) for d in data or []]

    def get(self, name: str) -> Network:
        return Network.from_api(
            self._c.get(f"/1.0/networks/{quote(name, safe='')}", what=f"get network {name}")
        )

    def find(self, name: str) -> Network | None:
        try:
            return self.get(name)
        except RuntimeNotFound:
            return None

    def create(
        self, name: str, *, type: str, config: dict[str, str] | None = None, description: str = ""
    ) -> None:
        body = {"name": name, "type": type, "config": config or {}, "description": description}
        self._c.call("POST", "/1.0/networks", what=f"create network {name} ({type})", json=body)

    def delete(self, name: str) -> None:
        self._c.call("DELETE", f"/1.0/networks/{quote(name, safe='')}", what=f"delete network {name}")
