"""Restoring a backup onto a fresh host.

``restore`` puts a backup onto a fresh host: the store (members, ports, keys, shares), the homes, the
containers (imported from their backups, or made again from their templates by reconcile), then the
same reconcile as ``labgpu reconcile`` starts what should run and puts port maps back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from labgpu.errors import BadInput, Conflict
from labgpu.runtime.backups import InstanceBackups
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services import hosts
from labgpu.services.context import Services
from labgpu.services.ops._backup_index import (
    Progress,
    _quiet,
    parse_containers,
    read_manifest,
    resolve_backup,
)
from labgpu.services.ops._backup_parts import _sha256, restore_home, restore_store
from labgpu.services.ops._reconcile import ReconcileReport, reconcile
from labgpu.store.models import Host, HostKind, Member, MemberState

# Restore ------------------------------------------------------------------------------------------


@dataclass
class RestoreResult:
    backup: str
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reconcile: ReconcileReport | None = None

    @property
    def failed(self) -> bool:
        return bool(self.reconcile and self.reconcile.failures)

    def as_dict(self) -> dict[str, Any]:
        return {
            "backup": self.backup,
            "steps": self.steps,
            "notes": self.notes,
            "reconcile": self.reconcile.as_dict() if self.reconcile else None,
            "failed": self.failed,
        }


def _verify(folder: Path, entry: dict[str, Any]) -> Path:
    path = folder / str(entry["file"])
    if not path.is_file():
        raise BadInput(f"{path} is missing from the backup")
    if path.stat().st_size != entry["size"] or _sha256(path) != entry["sha256"]:
        raise BadInput(f"{path} does not match its checksum in manifest.json: the backup is damaged")
    return path


def restore_backup(
    svc: Services,
    given: str,
    *,
    containers: str | None = "all",
    homes: bool = True,
    progress: Progress = _quiet,
) -> RestoreResult:
    """Put a backup onto this host, whose store must hold no members yet (a fresh host).

    Restores the store (migrated to this labgpu's schema), the homes (never over a non-empty one),
    the chosen containers from their backups (the ones left out are made again from their templates),
    then reconciles: containers that should run are started and their port maps put back.
    Raises Conflict when the store already has members, BadInput for a damaged backup or a missing
    profile, ConfigError for a store of another kind. Waits for every step."""
    folder = resolve_backup(svc, given)
    manifest = read_manifest(folder)
    result = RestoreResult(backup=folder.name)
    with svc.session() as session:
        count = session.scalar(select(func.count()).select_from(Member)) or 0
    if count:
        raise Conflict(
            f"this host's store already has {count} member(s); restore onto a fresh host",
            hint="point state_dir/database_url at an empty store to restore into",
        )
    chosen = set(parse_containers(containers, [str(c["member"]) for c in manifest.get("containers") or []]))
    entries = [c for c in manifest.get("containers") or [] if c["member"] in chosen]
    profiles = {p for c in entries for p in c.get("profiles") or []}
    for profile in sorted(profiles):
        if svc.runtime.profiles.find(profile) is None:
            raise BadInput(
                f"the containers need the profile {profile}, which this daemon lacks",
                hint="run `labgpu host init` (with the same profile_name) before restoring",
            )
    progress("checking files")
    _verify(folder, manifest["store"])
    tars = {c["container"]: _verify(folder, c) for c in entries}
    home_tars = {h["member"]: _verify(folder, h) for h in manifest.get("homes") or []} if homes else {}

    progress("store")
    restore_store(svc, folder, manifest["store"])
    result.steps.append(
        f"store restored ({manifest['store']['backend']}, {len(manifest.get('members') or [])} member(s))"
    )
    kind = svc.runtime.server().kind
    with svc.session() as session:
        for host in session.scalars(select(Host).where(Host.url.is_(None))):
            if str(host.kind) != kind:
                host.kind = HostKind(kind)
        svc.audit(
            session,
            "backup.restore",
            folder.name,
            created_at=manifest.get("created_at"),
            host=manifest.get("host"),
        )

    for name, tar_path in sorted(home_tars.items()):
        progress(f"home of {name}")
        result.steps.append(f"home of {name}: {restore_home(svc, name, tar_path)}")

    backups = InstanceBackups(svc.runtime)
    with svc.session() as session:
        state = {m.name: m.state for m in session.scalars(select(Member))}
    for entry in entries:
        container = entry["container"]
        if state.get(entry["member"]) in (None, MemberState.REMOVING):
            result.notes.append(f"{container}: its member is not in the restored store; not imported")
            continue
        try:
            inst = svc.runtime.instances.get(container)
        except RuntimeNotFound:
            inst = None
        if inst is not None:
            result.notes.append(
                f"{container} already exists on this daemon (owner {inst.label('owner') or 'unknown'}): left as it is"
            )
            continue
        progress(f"container {container}")
        backups.import_(container, tars[container], pool=svc.settings.storage_pool)
        result.steps.append(f"container {container} imported from its backup")
    left_out = [
        m["name"] for m in manifest.get("members") or [] if m["name"] not in chosen and m.get("container")
    ]
    if left_out:
        result.notes.append(
            f"no container backup for {', '.join(left_out)}: made again from their templates (homes kept)"
        )

    progress("reconcile")
    result.reconcile = reconcile(svc)
    if hosts.gateway_enabled(svc.settings):
        hosts.sync_gateway(svc)
        result.steps.append("login gateway accounts and map refreshed")
    return result
