"""Images: import from tarballs, aliases, properties, publish from an instance."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
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


@dataclass(frozen=True)
class RemoteImage:
    """An image on an image server (the official ones, a campus mirror) that the daemon pulls itself."""

    server: str
    alias: str
    protocol: str = "simplestreams"

    def source(self) -> dict[str, Any]:
        """The ``source`` of an instance create request for this image."""
        return {
            "type": "image",
            "mode": "pull",
            "server": self.server,
            "protocol": self.protocol,
            "alias": self.alias,
        }


def file_fingerprint(path: Path) -> str:
    """The fingerprint LXD and Incus give a unified image: sha256 of its tarball."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


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

    def resolve_alias(self, alias: str, *, timeout: float | None = None) -> str | None:
        """The fingerprint an alias points at, or None. ``timeout`` bounds the request."""
        try:
            data = self._c.get(
                f"/1.0/images/aliases/{quote(alias, safe='')}",
                what=f"get image alias {alias}",
                timeout=timeout,
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

    def create_alias(self, alias: str, fingerprint: str, *, description: str = "") -> None:
        """Create ``alias`` for ``fingerprint``; never moves an existing one. Raises RuntimeConflict
        when the alias exists."""
        self._c.call(
            "POST",
            "/1.0/images/aliases",
            what=f"create image alias {alias}",
            json={"name": alias, "target": fingerprint, "description": description},
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

    def publish_snapshot(
        self,
        instance: str,
        snapshot: str,
        *,
        properties: dict[str, str],
        timeout: float | None = None,
    ) -> str:
        """Publish a snapshot of an instance (running or not) as a private image, with exactly
        ``properties`` (those the instance's own image metadata carried are replaced, not merged);
        returns its fingerprint. Only the root filesystem goes in: disk devices (a home folder) are
        not part of a snapshot. Waits."""
        body: dict[str, Any] = {
            "source": {"type": "snapshot", "name": f"{instance}/{snapshot}"},
            "properties": properties,
            "public": False,
        }
        op = self._c.call(
            "POST", "/1.0/images", what=f"publish {instance}/{snapshot}", json=body, timeout=timeout
        )
        fingerprint = str(((op or {}).get("metadata") or {}).get("fingerprint", ""))
        if not fingerprint:
            raise RuntimeError_(f"publishing {instance}/{snapshot} finished without a fingerprint")
        self._c.call(
            "PATCH",
            f"/1.0/images/{fingerprint}",
            what=f"set properties of image {fingerprint[:12]}",
            json={"properties": properties, "public": False},
        )
        return fingerprint

    def import_unified(
        self,
        tarball: Path,
        *,
        aliases: list[str] | None = None,
        properties: dict[str, str] | None = None,
        public: bool = False,
        timeout: float | None = None,
    ) -> str:
        """Upload a unified image tarball (what export gives for a published image) unless the daemon
        already has it, set properties and aliases (moving them). Returns the fingerprint. Waits."""
        fingerprint = file_fingerprint(tarball)
        if self.find(fingerprint) is None:
            p = self._c.header_prefix
            with tarball.open("rb") as f:
                op = self._c.call(
                    "POST",
                    "/1.0/images",
                    what=f"import image {tarball.name}",
                    content=f,
                    headers={
                        "Content-Type": "application/octet-stream",
                        f"{p}public": "1" if public else "0",
                        f"{p}fingerprint": fingerprint,
                    },
                    timeout=timeout,
                )
            got = str(((op or {}).get("metadata") or {}).get("fingerprint", ""))
            if got and got != fingerprint:
                raise RuntimeError_(f"image import gave fingerprint {got[:12]}, expected {fingerprint[:12]}")
        if properties:
            self.set_properties(fingerprint, properties)
        for alias in aliases or []:
            self.set_alias(alias, fingerprint)
        return fingerprint

    def export_to(self, fingerprint: str, dest: Path, *, rootfs_dest: Path | None = None) -> list[Path]:
        """Stream an image to files: a unified image to ``dest``; a split one to ``dest`` (metadata)
        and ``rootfs_dest`` (default: ``dest`` + ".rootfs"). Returns the files written. Files are written
        beside their final names and renamed at the end, so a failed export leaves nothing."""
        rootfs_dest = rootfs_dest or dest.with_name(dest.name + ".rootfs")
        written: list[tuple[Path, Path]] = []

        def open_part(final: Path) -> BinaryIO:
            tmp = final.with_name(f".{final.name}.partial")
            written.append((tmp, final))
            return tmp.open("wb")

        try:
            with self._c.stream(
                "GET",
                f"/1.0/images/{quote(fingerprint, safe='')}/export",
                what=f"export image {fingerprint[:12]}",
                timeout=self._c.operation_timeout,
            ) as response:
                ctype = response.headers.get("content-type", "")
                if ctype.startswith("multipart/"):
                    boundary = _boundary(ctype)
                    targets = {"metadata": dest, "rootfs": rootfs_dest}

                    def open_named(name: str) -> BinaryIO:
                        if name not in targets:
                            raise RuntimeError_(f"export image {fingerprint[:12]}: unexpected part {name!r}")
                        return open_part(targets[name])

                    split_multipart(response.iter_bytes(), boundary, open_named)
                else:
                    with open_part(dest) as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
            for tmp, final in written:
                tmp.rename(final)
        finally:
            for tmp, _final in written:
                tmp.unlink(missing_ok=True)
        return [final for _tmp, final in written]

    def export(self, fingerprint: str) -> bytes:
        """The image file(s) as the daemon serves them (a unified tarball or multipart)."""
        response = self._c.raw("GET", f"/1.0/images/{fingerprint}/export", timeout=self._c.operation_timeout)
        if not response.is_success:
            raise_for_response(response, f"export image {fingerprint[:12]}")
        return response.content


def _boundary(content_type: str) -> bytes:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise RuntimeError_(f"image export: multipart answer without a boundary ({content_type})")
    return match.group(1).encode()


def split_multipart(
    chunks: Iterable[bytes], boundary: bytes, open_part: Callable[[str], BinaryIO]
) -> list[str]:
    """Write each part of a ``multipart/form-data`` stream to the file ``open_part(name)`` gives, without
    holding a part in memory (a split image's rootfs is hundreds of megabytes). Returns the part names.
    Raises RuntimeError_ when the stream ends before its closing boundary."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) + 2  # bytes held back: the start of a delimiter split across chunks
    buf = bytearray(b"\r\n")  # so the first delimiter looks like every other one
    state = "preamble"
    out: BinaryIO | None = None
    names: list[str] = []
    try:
        for chunk in chunks:
            buf += chunk
            while True:
                if state in ("preamble", "body"):
                    at = buf.find(delimiter)
                    if at < 0:
                        if len(buf) > keep:
                            if out is not None:
                                out.write(buf[:-keep])
                            del buf[:-keep]
                        break
                    if out is not None:
                        out.write(buf[:at])
                        out.close()
                        out = None
                    del buf[: at + len(delimiter)]
                    state = "delimiter"
                if state == "delimiter":
                    if len(buf) < 2:
                        break
                    if buf[:2] == b"--":
                        state = "done"
                        break
                    state = "headers"
                if state == "headers":
                    end = buf.find(b"\r\n\r\n", 2)
                    if end < 0:
                        break
                    headers = bytes(buf[:end]).decode("latin-1")
                    del buf[: end + 4]
                    match = re.search(r'name="([^"]*)"', headers)
                    name = match.group(1) if match else ""
                    names.append(name)
                    out = open_part(name)
                    state = "body"
                if state == "done":
                    break
    finally:
        if out is not None:
            out.close()
    if state != "done":
        raise RuntimeError_("image export: the answer ended before the last part was complete")
    return names
