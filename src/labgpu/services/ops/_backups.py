"""Backups of a host: the store, chosen containers and (optionally) the members' homes.

A backup is one folder, ``labgpu-backup-YYYYMMDDTHHMMSSZ``, holding:

- ``manifest.json``: what is inside, with a sha256 for every file;
- ``store.sqlite`` (SQLite's online backup API: a consistent copy while labgpu runs) or
  ``store.pgdump`` (``pg_dump --format=custom``);
- ``containers/NAME.tar.gz``: the daemon's own instance backup (root filesystem, config, devices);
- ``homes/NAME.tar`` with ``--homes``: the member's home folder, numeric owners kept.

It is written under a hidden name and renamed when complete, so a backup that is listed is whole.
Restoring one is :mod:`labgpu.services.ops._restore`'s.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from labgpu import __version__
from labgpu.errors import BadInput, Conflict, LabgpuError
from labgpu.runtime.backups import InstanceBackups
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.context import Services
from labgpu.services.hosts import recorded_local_host
from labgpu.services.ops._backup_index import (
    COMPRESSIONS,
    FORMAT,
    FORMAT_VERSION,
    PREFIX,
    BackupInfo,
    Progress,
    _info,
    _quiet,
    apply_retention,
    parse_containers,
)
from labgpu.services.ops._backup_parts import backup_home, backup_store
from labgpu.store.models import Member

# Create -------------------------------------------------------------------------------------------


@dataclass
class CreateResult:
    info: BackupInfo
    removed: list[str] = field(default_factory=list)  # old backups deleted by retention
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"backup": self.info.as_dict(), "removed": self.removed, "notes": self.notes}


def create_backup(
    svc: Services,
    *,
    containers: str | None = "all",
    homes: bool = False,
    dest: Path | None = None,
    keep: int | None = None,
    compression: str = "gzip",
    progress: Progress = _quiet,
) -> CreateResult:
    """Back up the store, the chosen containers (all, none or NAME,NAME) and, with ``homes``, the homes.

    Containers are backed up as they are (a running one like a power cut: its disk, not its memory).
    Then older backups beyond ``keep`` (default: the backup_keep setting; 0 keeps all) are deleted.
    Raises BadInput for unknown members or compression, LabgpuError when a step fails (nothing is left
    half-written)."""
    if compression not in COMPRESSIONS:
        raise BadInput(f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")
    dest = dest or svc.settings.backup_dir
    keep = svc.settings.backup_keep if keep is None else keep
    if keep < 0:
        raise BadInput("--keep must be 0 (keep all) or more")
    now = datetime.now(UTC)
    name = PREFIX + now.strftime("%Y%m%dT%H%M%SZ")
    final = dest / name
    if final.exists():
        raise Conflict(f"{final} already exists; try again in a second")
    with svc.session() as session:
        rows = session.scalars(select(Member).order_by(Member.name)).all()
        member_rows: list[dict[str, Any]] = [
            {
                "name": m.name,
                "container": m.container,
                "uid": m.uid,
                "state": str(m.state),
                "template": m.template,
            }
            for m in rows
        ]
        host = recorded_local_host(session)
        host_name = host.name if host else ""
    chosen = parse_containers(containers, [m["name"] for m in member_rows])
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    work = dest / f".{name}.partial"
    work.mkdir(mode=0o700)
    notes: list[str] = []
    try:
        progress("store")
        store = backup_store(svc, work)
        container_entries = []
        backups = InstanceBackups(svc.runtime)
        extension = {
            "gzip": ".tar.gz",
            "zstd": ".tar.zst",
            "xz": ".tar.xz",
            "bzip2": ".tar.bz2",
            "none": ".tar",
        }
        for member in (m for m in member_rows if m["name"] in chosen):
            container = member["container"]
            if not container:
                notes.append(f"{member['name']} has no container yet: not backed up")
                continue
            try:
                inst = svc.runtime.instances.get(container)
            except RuntimeNotFound:
                notes.append(f"{member['name']}'s container {container} is missing: not backed up")
                continue
            if inst.label("owner") != member["name"]:
                notes.append(f"{container} is not marked as {member['name']}'s: not backed up")
                continue
            progress(f"container {container}")
            (work / "containers").mkdir(exist_ok=True)
            backup_name = f"labgpu-{now.strftime('%Y%m%d%H%M%S')}"
            backups.create(container, backup_name, compression=compression)
            try:
                exported = backups.export_to(
                    container, backup_name, work / "containers" / f"{container}{extension[compression]}"
                )
            finally:
                backups.delete(container, backup_name)
            container_entries.append(
                {
                    "member": member["name"],
                    "container": container,
                    "profiles": list(inst.profiles),
                    "status": inst.status,
                    "file": str(exported.path.relative_to(work)),
                    "size": exported.size,
                    "sha256": exported.sha256,
                }
            )
        home_entries = []
        if homes:
            for member in member_rows:
                progress(f"home of {member['name']}")
                entry = backup_home(svc, member["name"], work)
                if entry is None:
                    notes.append(f"{member['name']} has no home folder: not backed up")
                else:
                    home_entries.append(entry)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "labgpu": __version__,
            "created_at": now.isoformat(),
            "created_by": svc.actor.name,
            "host": host_name,
            "runtime": _runtime_info(svc),
            "store": store,
            "members": member_rows,
            "containers": container_entries,
            "homes": home_entries,
            "settings": {
                "home_base": str(svc.settings.home_base),
                "container_home": svc.settings.container_home,
                "profile_name": svc.settings.profile_name,
                "storage_pool": svc.settings.storage_pool,
                "container_user": svc.settings.container_user,
            },
            "notes": notes,
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    with svc.session() as session:
        svc.audit(
            session,
            "backup.create",
            name,
            dest=str(dest),
            containers=[c["container"] for c in container_entries],
            homes=[h["member"] for h in home_entries],
        )
    removed = apply_retention(dest, keep) if keep else []
    return CreateResult(info=_info(final, manifest), removed=removed, notes=notes)


def _runtime_info(svc: Services) -> dict[str, str | None]:
    # A store-only backup (--containers none) must work while the daemon is down.
    try:
        server = svc.runtime.server()
    except LabgpuError:
        return {"kind": None, "version": None}
    return {"kind": server.kind, "version": server.version}
