"""Storage pools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labgpu.runtime.errors import RuntimeNotFound

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient


@dataclass(frozen=True)
class StoragePool:
    name: str
    driver: str
    config: dict[str, str]
    status: str = ""
    used_by: tuple[str, ...] = ()

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> StoragePool:
        return cls(
            name=str(data["name"]),
            driver=str(data.get("driver") or ""),
            config={str(k): str(v) for k, v in (data.get("config") or {}).items()},
            status=str(data.get("status") or ""),
            used_by=tuple(data.get("used_by") or ()),
        )


class StoragePools:
    def __init__(self, client: RuntimeClient) -> None:
        self._c = client

    def all(self) -> list[StoragePool]:
        data = self._c.get(
            "/1.0/storage-pools", what="list storage pools", params={"recursion": 1}, project=False
        )
        return [StoragePool.from_api(d) for d in data or []]

    def get(self, name: str) -> StoragePool:
        data = self._c.get(
            f"/1.0/storage-pools/{quote(name, safe='')}", what=f"get storage pool {name}", project=False
        )
        return StoragePool.from_api(data)

    def find(self, name: str) -> StoragePool | None:
        try:
            return self.get(name)
        except RuntimeNotFound:
            return None

    def create(
        self, name: str, *, driver: str, config: dict[str, str] | None = None, description: str = ""
    ) -> None:
        """Create a pool. Waits. Raises RuntimeBadRequest when the driver is unusable here."""
        body = {"name": name, "driver": driver, "config": config or {}, "description": description}
        self._c.call(
            "POST",
            "/1.0/storage-pools",
            what=f"create storage pool {name} ({driver})",
            json=body,
            project=False,
        )

    def delete(self, name: str) -> None:
        self._c.call(
            "DELETE",
            f"/1.0/storage-pools/{quote(name, safe='')}",
            what=f"delete storage pool {name}",
            project=False,
        )

    def resources(self, name: str) -> dict[str, Any]:
        """Space and inodes used and total."""
        data: dict[str, Any] = self._c.get(
            f"/1.0/storage-pools/{quote(name, safe='')}/resources",
            what=f"read usage of pool {name}",
            project=False,
        )
        return data
