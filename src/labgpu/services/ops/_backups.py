"""Backups of a host: the store, chosen containers and (optionally) the members' homes.

A backup is one folder, ``labgpu-backup-YYYYMMDDTHHMMSSZ``, holding:

- ``manifest.json``: what is inside, with a sha256 for every file;
- ``store.sqlite`` (SQLite's online backup API: a consistent copy while labgpu runs) or
  ``store.pgdump`` (``pg_dump --format=custom``);
- ``containers/NAME.tar.gz``: the daemon's own instance backup (root filesystem, config, devices);
- ``homes/NAME.tar`` with ``--homes``: the member's home folder, numeric owners kept.

It is written under a hidden name and renamed when complete, so a backup that is listed is whole.
``restore`` puts a backup onto a fresh host: the store (members, ports, keys, shares), the homes, the
containers (imported from their backups, or made again from their templates by reconcile), then the
same reconcile as ``labgpu reconcile`` starts what should run and puts port maps back.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import URL, Engine

from labgpu import __version__
from labgpu.errors import BadInput, ConfigError, Conflict, LabgpuError, NotFound
from labgpu.runtime.backups import InstanceBackups
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services import hosts
from labgpu.services.context import Services
from labgpu.services.hosts import recorded_local_host
from labgpu.services.ops._reconcile import ReconcileReport, reconcile
from labgpu.store.db import database_url, describe_url, sqlite_path
from labgpu.store.migrate import current_revision, upgrade
from labgpu.store.models import Host, HostKind, Member, MemberState

FORMAT = "labgpu-backup"
FORMAT_VERSION = 1
PREFIX = "labgpu-backup-"
_NAME_RE = re.compile(r"^labgpu-backup-\d{8}T\d{6}Z$")
_CHUNK = 1 << 20
COMPRESSIONS = ("gzip", "zstd", "xz", "bzip2", "none")

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class BackupInfo:
    name: str
    path: Path
    created_at: str
    size: int
    store: str
    members: list[str]
    containers: list[str]
    homes: list[str]
    labgpu: str

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["path"] = str(self.path)
        return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_entry(path: Path, root: Path) -> dict[str, Any]:
    return {"file": str(path.relative_to(root)), "size": path.stat().st_size, "sha256": _sha256(path)}


def parse_containers(value: str | None, all_names: Sequence[str]) -> list[str]:
    """The members whose containers go into the backup: all, none, or NAME,NAME. Raises BadInput."""
    if value is None or value.strip() == "all":
        return list(all_names)
    if value.strip() in ("none", ""):
        return []
    wanted = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [w for w in wanted if w not in all_names]
    if unknown:
        raise BadInput(f"no member named {', '.join(unknown)}", hint="give all, none or member names")
    return list(dict.fromkeys(wanted))


# The store ----------------------------------------------------------------------------------------


def _engine(svc: Services) -> Engine | None:
    bind = svc.sessions.kw.get("bind")
    return bind if isinstance(bind, Engine) else None


def _pg_env(url: URL) -> tuple[list[str], dict[str, str]]:
    """libpq connection options for pg_dump/pg_restore: the password in the environment, never in argv."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    args = ["--dbname", str(url.database or "")]
    if url.host:
        args += ["--host", url.host]
    if url.port:
        args += ["--port", str(url.port)]
    if url.username:
        args += ["--username", url.username]
    return args, env


def backup_store(svc: Services, folder: Path) -> dict[str, Any]:
    """Copy the store into ``folder``; returns its manifest entry. Raises LabgpuError."""
    url = database_url(svc.settings)
    revision = current_revision(svc.settings, engine=_engine(svc))
    if url.get_backend_name() == "sqlite":
        source = sqlite_path(url)
        if source is None:
            raise ConfigError("an in-memory SQLite store cannot be backed up")
        target = folder / "store.sqlite"
        src = sqlite3.connect(str(source))
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)  # a consistent copy, even while labgpu writes
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            dst.close()
            src.close()
        backend = "sqlite"
    else:
        target = folder / "store.pgdump"
        args, env = _pg_env(url)
        _tool(
            ["pg_dump", "--format=custom", "--no-owner", "--file", str(target), *args],
            env=env,
            what="pg_dump",
        )
        backend = "postgresql"
    return {"backend": backend, "revision": revision, **_file_entry(target, folder)}


def _tool(args: list[str], *, what: str, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=3600, check=False)
    except FileNotFoundError:
        raise ConfigError(f"{args[0]} is not installed", hint="apt install postgresql-client tar") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise LabgpuError(f"{what} failed: {lines[-1] if lines else f'exit code {done.returncode}'}")
    return done.stdout


def restore_store(svc: Services, folder: Path, entry: dict[str, Any]) -> None:
    """Replace the (empty) store with the backup's, then migrate it to this labgpu's schema."""
    url = database_url(svc.settings)
    backend = "sqlite" if url.get_backend_name() == "sqlite" else "postgresql"
    if entry["backend"] != backend:
        raise ConfigError(
            f"this backup holds a {entry['backend']} store and this host uses {backend} "
            f"({describe_url(url)}); restore onto the same kind of store"
        )
    engine = _engine(svc)
    if engine is not None:
        engine.dispose()
    source = folder / entry["file"]
    if backend == "sqlite":
        target = sqlite_path(url)
        if target is None:
            raise ConfigError("cannot restore into an in-memory SQLite store")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    else:
        args, env = _pg_env(url)
        _tool(
            [
                "pg_restore",
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                *args,
                str(source),
            ],
            env=env,
            what="pg_restore",
        )
    if engine is not None:
        engine.dispose()
    upgrade(svc.settings, engine=engine)


# Homes --------------------------------------------------------------------------------------------


def backup_home(svc: Services, name: str, folder: Path) -> dict[str, Any] | None:
    """Tar the member's home folder (numeric owners, permissions, ACLs and xattrs kept). None when it is missing."""
    base = svc.settings.home_base
    if not (base / name).is_dir():
        return None
    target = folder / "homes" / f"{name}.tar"
    target.parent.mkdir(exist_ok=True)
    _tool(
        [
            "tar",
            "--create",
            "--file",
            str(target),
            "--numeric-owner",
            "--acls",
            "--xattrs",
            "-C",
            str(base),
            name,
        ],
        what=f"tar of {name}'s home",
    )
    return {"member": name, **_file_entry(target, folder)}


def _check_home_tar(path: Path, name: str) -> None:
    with tarfile.open(path) as tar:
        for item in tar.getmembers():
            parts = Path(item.name).parts
            if not parts or parts[0] != name or ".." in parts or Path(item.name).is_absolute():
                raise BadInput(f"{path.name} holds {item.name!r}, outside {name}/: refusing to extract it")
            link = Path(item.linkname).parts
            if item.islnk() and (not link or link[0] != name or ".." in link):
                raise BadInput(f"{path.name} holds a hard link out of {name}/: refusing to extract it")


def restore_home(svc: Services, name: str, tar_path: Path) -> str:
    """Extract a home unless the member already has a non-empty one (never overwrites). Returns what was done."""
    base = svc.settings.home_base
    home = base / name
    if home.is_dir() and any(home.iterdir()):
        return f"kept the existing {home}"
    _check_home_tar(tar_path, name)
    base.mkdir(parents=True, exist_ok=True)
    if home.is_dir():
        home.rmdir()
    _tool(
        [
            "tar",
            "--extract",
            "--file",
            str(tar_path),
            "--numeric-owner",
            "--same-permissions",
            "--acls",
            "--xattrs",
            "-C",
            str(base),
        ],
        what=f"extracting {name}'s home",
    )
    return f"restored {home}"


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


def apply_retention(dest: Path, keep: int) -> list[str]:
    """Delete complete backups in ``dest`` beyond the newest ``keep``; returns their names. Only folders
    that are labgpu backups (their name and manifest say so) are ever touched."""
    backups = list_backups(dest)
    removed = []
    for info in backups[keep:]:
        shutil.rmtree(info.path)
        removed.append(info.name)
    return removed


# List ---------------------------------------------------------------------------------------------


def read_manifest(path: Path) -> dict[str, Any]:
    """A backup's manifest. Raises NotFound / BadInput when ``path`` is no labgpu backup."""
    try:
        data = json.loads((path / "manifest.json").read_text())
    except FileNotFoundError:
        raise NotFound(f"{path} is not a labgpu backup (no manifest.json)") from None
    except (OSError, ValueError) as exc:
        raise BadInput(f"{path}/manifest.json cannot be read: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadInput(f"{path} is not a labgpu backup")
    if data.get("version") != FORMAT_VERSION:
        raise BadInput(
            f"{path} is a backup of format {data.get('version')}; this labgpu reads {FORMAT_VERSION}"
        )
    return data


def _info(path: Path, manifest: dict[str, Any]) -> BackupInfo:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return BackupInfo(
        name=path.name,
        path=path,
        created_at=str(manifest.get("created_at", "")),
        size=size,
        store=str((manifest.get("store") or {}).get("backend", "")),
        members=[str(m["name"]) for m in manifest.get("members") or []],
        containers=[str(c["container"]) for c in manifest.get("containers") or []],
        homes=[str(h["member"]) for h in manifest.get("homes") or []],
        labgpu=str(manifest.get("labgpu", "")),
    )


def list_backups(dest: Path) -> list[BackupInfo]:
    """The complete backups in ``dest``, newest first."""
    if not dest.is_dir():
        return []
    out = []
    for path in dest.iterdir():
        if not path.is_dir() or not _NAME_RE.match(path.name):
            continue
        try:
            out.append(_info(path, read_manifest(path)))
        except LabgpuError:
            continue
    return sorted(out, key=lambda b: (b.created_at, b.name), reverse=True)


def resolve_backup(svc: Services, given: str) -> Path:
    """A backup folder from a path, or from a name in the backup_dir setting. Raises NotFound."""
    path = Path(given)
    if not path.exists() and "/" not in given:
        path = svc.settings.backup_dir / given
    if not path.is_dir():
        raise NotFound(f"no backup at {given}", hint="list them with `labgpu backup list`")
    return path


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
    if hosts.is_enabled(svc.settings):
        hosts.sync(svc)
        result.steps.append("login gateway accounts and map refreshed")
    return result
