"""Instance backups: ``/1.0/instances/NAME/backups`` (create, export, delete) and import from a tarball.

A backup is a tarball of the instance (its root filesystem and its config, devices and profiles in
``backup.yaml``) that the same or another daemon can turn back into the instance. Host folders
mounted into the instance (homes, shares) are not in it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labgpu.runtime.errors import RuntimeNotFound

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ExportedBackup:
    path: Path
    size: int
    sha256: str


def _path(name: str) -> str:
    return f"/1.0/instances/{quote(name, safe='')}/backups"


class InstanceBackups:
    """Backups of the instances of one client."""

    def __init__(self, client: RuntimeClient) -> None:
        self._c = client

    def create(
        self,
        instance: str,
        backup: str,
        *,
        compression: str = "gzip",
        instance_only: bool = True,
        expires_in: timedelta = timedelta(days=1),
    ) -> None:
        """Make a backup on the daemon (kept until exported and deleted, or until it expires). Waits."""
        expires = (datetime.now(UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
        body: dict[str, Any] = {
            "name": backup,
            "expires_at": expires,
            "instance_only": instance_only,
            "container_only": instance_only,  # the older name of the same flag
            "optimized_storage": False,
            "compression_algorithm": compression,
        }
        self._c.call(
            "POST",
            _path(instance),
            what=f"back up instance {instance}",
            json=body,
            timeout=self._c.operation_timeout,
        )

    def export_to(
        self, instance: str, backup: str, dest: Path, *, progress: Callable[[int], None] | None = None
    ) -> ExportedBackup:
        """Download a backup to ``dest`` (written beside it and renamed at the end). Returns its size and sha256."""
        tmp = dest.with_name(f".{dest.name}.partial")
        digest = hashlib.sha256()
        size = 0
        try:
            with (
                self._c.stream(
                    "GET",
                    f"{_path(instance)}/{quote(backup, safe='')}/export",
                    what=f"export backup {backup} of {instance}",
                    timeout=self._c.operation_timeout,
                ) as response,
                tmp.open("wb") as out,
            ):
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress is not None:
                        progress(size)
            tmp.rename(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return ExportedBackup(path=dest, size=size, sha256=digest.hexdigest())

    def delete(self, instance: str, backup: str) -> None:
        """Delete a backup from the daemon; one already gone is fine."""
        with contextlib.suppress(RuntimeNotFound):
            self._c.call(
                "DELETE",
                f"{_path(instance)}/{quote(backup, safe='')}",
                what=f"delete backup {backup} of {instance}",
            )

    def import_(self, name: str, tarball: Path, *, pool: str | None = None) -> None:
        """Create instance ``name`` from a backup tarball (its config, devices and profiles come with it;
        the profiles and the pool must exist). Streams the file; waits. Raises RuntimeConflict when the
        name is taken."""
        p = self._c.header_prefix
        headers = {"Content-Type": "application/octet-stream", f"{p}name": name}
        if pool:
            headers[f"{p}pool"] = pool
        with tarball.open("rb") as f:
            self._c.call(
                "POST",
                "/1.0/instances",
                what=f"import instance {name} from {tarball.name}",
                content=f,
                headers=headers,
                timeout=self._c.operation_timeout,
            )
