"""The parts of a backup: the store's dump (SQLite's online backup API, or ``pg_dump``) and members' home
folders (tar, numeric owners kept), each written into a backup folder and put back from it.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, Engine

from labgpu.errors import BadInput, ConfigError, LabgpuError
from labgpu.services.context import Services
from labgpu.store.db import database_url, describe_url, sqlite_path
from labgpu.store.migrate import current_revision, upgrade

_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_entry(path: Path, root: Path) -> dict[str, Any]:
    return {"file": str(path.relative_to(root)), "size": path.stat().st_size, "sha256": _sha256(path)}


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
