"""Images: import from tarballs, aliases, properties, publish from an instance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labgpu.runtime.errors import RuntimeError_, RuntimeNotFound, raise_for_response

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient


@dataclass(frozen=True)
class Image:
    fingerprint: str
    aliases: tuple[str, ...]
    properties: dict[str, str]
    size: int = 0
    created_at: str = ""
    architecture: str = ""
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Image:
        return cls(
            fingerprint=str(data["fingerprint"]),
            aliases=tuple(str(a["name"]) for a in data.get("aliases") or []),
            properties={str(k): str(v) for k, v in (data.get("properties") or {}).items()},
            size=int(data.get("size") or 0),
            created_at=str(data.get("created_at") or ""),
            architecture=str(data.get("architecture") or ""),
            extra=data,
        )


def split_image_fingerprint(metadata: Path, rootfs: Path) -> str:
    """The fingerprint LXD and Incus give a split image: sha256 of both tarballs in turn."""
    digest = hashlib.sha256()
    for path in (metadata, rootfs):
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


class Images:
    """The ``/1.0/images`` resource of one client."""

    def __init__(self, client: RuntimeClient) -> None:
        self._c = client

    def all(self) -> list[Image]:
        data = self._c.get("/1.0/images", what="list images", params={"recursion": 1})
        return [Image.from_api(d) for d in data or []]

    def get(self, fingerprint: str) -> Image:
        data = self._c.get(f"/1.0/images/{quote(fingerprint, safe='')}", what=f"get image {fingerprint[:12]}")
        return Image.from_api(data)

    def resolve_alias(self, alias: str) -> str | None:
        """The fingerprint an alias points at, or None."""
        try:
            data = self._c.get(
                f"/1.0/images/aliases/{quote(alias, safe='')}", what=f"get image alias {alias}"
            )
        except RuntimeNotFound:
            return None
        return str(data["target"])

    def get_by_alias(self, alias: str) -> Image | None:
        fp = self.resolve_alias(alias)
        return self.get(fp) if fp else None

    def import_tarballs(
        self,
        metadata: Path,
        rootfs: Path,
        *,
        aliases: list[str] | None = None,
        properties: dict[str, str] | None = None,
        public: bool = False,
        timeout: float | None = None,
    ) -> str:
        """Upload a split image (metadata + rootfs tarballs) unless the daemon
        already has it, set its properties and point the aliases at it (moving
        them from an older image). Returns the fingerprint. Waits for the upload."""
        fingerprint = split_image_fingerprint(metadata, rootfs)
        if self.find(fingerprint) is None:
            self._upload(metadata, rootfs, public=public, timeout=timeout)
        if properties:
            self.set_properties(fingerprint, properties)
        for alias in aliases or []:
            self.set_alias(alias, fingerprint)
        return fingerprint

    def find(self, fingerprint: str) -> Image | None:
        try:
            return self.get(fingerprint)
        except RuntimeNotFound:
            return None

    def _upload(self, metadata: Path, rootfs: Path, *, public: bool, timeout: float | None) -> str:
        p = self._c.header_prefix
        with metadata.open("rb") as meta_f, rootfs.open("rb") as root_f:
            files = {
                "metadata": (metadata.name, meta_f, "application/octet-stream"),
                "rootfs": (rootfs.name, root_f, "application/octet-stream"),
            }
            op = self._c.call(
                "POST",
                "/1.0/images",
                what=f"import image {metadata.name}",
                files=files,
                headers={f"{p}public": "1" if public else "0"},
                timeout=timeout,
            )
        fingerprint = str(((op or {}).get("metadata") or {}).get("fingerprint", ""))
        if not fingerprint:
            raise RuntimeError_("image import finished without a fingerprint")
        return fingerprint

    def set_properties(self, fingerprint: str, properties: dict[str, str]) -> None:
        image = self.get(fingerprint)
        merged = {**image.properties, **properties}
        self._c.call(
            "PATCH",
            f"/1.0/images/{fingerprint}",
            what=f"set properties of image {fingerprint[:12]}",
            json={"properties": merged},
        )

    def set_alias(self, alias: str, fingerprint: str, *, description: str = "") -> None:
        """Point ``alias`` at ``fingerprint``, creating it or moving it."""
        current = self.resolve_alias(alias)
        if current == fingerprint:
            return
        if current is None:
            self._c.call(
                "POST",
                "/1.0/images/aliases",
                what=f"create image alias {alias}",
                json={"name": alias, "target": fingerprint, "description": description},
            )
        else:
            self._c.call(
                "PUT",
                f"/1.0/images/aliases/{quote(alias, safe='')}",
                what=f"move image alias {alias}",
                json={"target": fingerprint, "description": description},
            )

    def delete_alias(self, alias: str) -> None:
        self._c.call(
            "DELETE", f"/1.0/images/aliases/{quote(alias, safe='')}", what=f"delete image alias {alias}"
        )

    def delete(self, fingerprint: str, *, wait: bool = True) -> Any:
        return self._c.call(
            "DELETE", f"/1.0/images/{fingerprint}", what=f"delete image {fingerprint[:12]}", wait=wait
        )

    def publish(
        self,
        instance: str,
        *,
        aliases: list[str] | None = None,
        properties: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> str:
        """Publish a stopped instance as an image; returns its fingerprint. Waits."""
        body: dict[str, Any] = {
            "source": {"type": "instance", "name": instance},
            "properties": properties or {},
        }
        op = self._c.call("POST", "/1.0/images", what=f"publish {instance}", json=body, timeout=timeout)
        fingerprint = str(((op or {}).get("metadata") or {}).get("fingerprint", ""))
        for alias in aliases or []:
            self.set_alias(alias, fingerprint)
        return fingerprint

    def export(self, fingerprint: str) -> bytes:
        """The image file(s) as the daemon serves them (a unified tarball or multipart)."""
        response = self._c.raw("GET", f"/1.0/images/{fingerprint}/export", timeout=self._c.operation_timeout)
        if not response.is_success:
            raise_for_response(response, f"export image {fingerprint[:12]}")
        return response.content
