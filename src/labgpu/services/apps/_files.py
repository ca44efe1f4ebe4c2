"""Files in a member's home, in the browser: a folder's listing, downloads and uploads, all through the daemon's
API (exec and the files API), so they work for a container on any host and never name a path outside the home.

Downloads and uploads are streamed: a chunk at a time between the browser and the daemon, never a whole file
in the portal's memory. An upload goes to a hidden temporary name and is renamed when complete, so a broken or
refused upload (over ``upload_max_mb``) leaves no half file under the real name.
"""

from __future__ import annotations

import contextlib
import posixpath
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from labgpu.domain import apps as rules
from labgpu.errors import N_, BadInput, Conflict, LabgpuError, NotFound
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeError_, RuntimeNotFound
from labgpu.services import hosts, members
from labgpu.services.context import Services

MAX_ENTRIES = 2000
CHUNK = 1 << 20


class UploadTooLarge(BadInput):
    status = 413
    reason = "upload-too-large"


@dataclass(frozen=True)
class FileEntry:
    name: str
    kind: str  # file, folder, link, other
    size: int


@dataclass(frozen=True)
class Folder:
    member: str
    path: str  # relative to the home, "" for the home itself
    entries: tuple[FileEntry, ...]
    truncated: bool

    @property
    def parent(self) -> str | None:
        if not self.path:
            return None
        return posixpath.dirname(self.path)


def _home(svc: Services, member: str) -> str:
    return svc.settings.container_home.format(name=member)


def _container(svc: Services, member: str) -> tuple[str, RuntimeClient, str]:
    with svc.session() as session:
        row = members.load_member(session, member)
        container = row.container
        runtime = hosts.runtime_for(svc, row.host)
    if not container:
        raise NotFound(N_("you have no container yet"))
    home = _home(svc, member)
    try:
        state = runtime.instances.state(container).status
    except RuntimeNotFound:
        raise NotFound(N_("the container does not exist")) from None
    if state != "Running":
        raise Conflict(N_("start your container first"))
    return container, runtime, home


_KINDS = {"f": "file", "d": "folder", "l": "link"}


def list_folder(svc: Services, member: str, path: str) -> Folder:
    """The entries of a folder of ``member``'s home (``path`` relative to it), folders first. One exec.
    Raises BadInput for a path outside the home, NotFound when it is not a folder."""
    target = rules.home_path(_home(svc, member), path)  # refused before the daemon is asked
    container, runtime, home = _container(svc, member)
    result = runtime.instances.exec(
        container,
        ["find", target, "-mindepth", "1", "-maxdepth", "1", "-printf", "%y\\t%s\\t%f\\0"],
        timeout=30,
    )
    if not result.ok:
        raise NotFound(N_("no such folder in the home: %(path)s"), values={"path": path[:200]})
    entries = []
    for record in result.stdout.split("\0"):
        kind, _, rest = record.partition("\t")
        size, _, name = rest.partition("\t")
        if not name:
            continue
        entries.append(FileEntry(name=name, kind=_KINDS.get(kind, "other"), size=int(size or 0)))
    entries.sort(key=lambda e: (e.kind != "folder", e.name.lower()))
    relative = posixpath.relpath(target, home) if target != home else ""
    return Folder(member, relative, tuple(entries[:MAX_ENTRIES]), len(entries) > MAX_ENTRIES)


@dataclass
class Download:
    name: str
    chunks: Iterator[bytes]


def download(svc: Services, member: str, path: str) -> Download:
    """A file of ``member``'s home as a stream of chunks (the daemon's files API; the response is opened when
    the first chunk is asked for). Raises BadInput for a path outside the home, NotFound when it is missing
    or a folder."""
    target = rules.home_path(_home(svc, member), path)  # refused before the daemon is asked
    container, runtime, home = _container(svc, member)
    if target == home:
        raise NotFound(N_("no such file in the home: %(path)s"), values={"path": path[:200]})
    # Open it now, so that a missing file is a 404 before the answer begins.
    stream = runtime.instances.open_file(container, target, timeout=600)
    try:
        response = stream.__enter__()
    except (RuntimeNotFound, RuntimeError_):
        raise NotFound(N_("no such file in the home: %(path)s"), values={"path": path[:200]}) from None

    def chunks() -> Iterator[bytes]:
        try:
            yield from response.iter_bytes(CHUNK)
        finally:
            stream.__exit__(None, None, None)

    return Download(name=posixpath.basename(target), chunks=chunks())


def upload(
    svc: Services,
    member: str,
    folder: str,
    name: str,
    chunks: Iterable[bytes],
    *,
    size_hint: int | None = None,
) -> int:
    """Write ``chunks`` as the file ``name`` in ``folder`` of ``member``'s home (owned by the container's user),
    replacing a file of that name. Streams; refuses past ``upload_max_mb`` (UploadTooLarge, nothing left
    behind). Returns the size written. Audited as ``files.upload``."""
    limit = svc.settings.upload_max_mb * 1024 * 1024
    if size_hint is not None and size_hint > limit:
        raise UploadTooLarge(
            N_("the file is larger than %(mb)s MiB"), values={"mb": svc.settings.upload_max_mb}
        )
    directory = rules.home_path(_home(svc, member), folder)  # refused before the daemon is asked
    final = posixpath.join(directory, rules.file_name(name))
    container, runtime, home = _container(svc, member)
    owner = runtime.instances.exec(container, ["stat", "-c", "%u %g", home], timeout=15)
    if not owner.ok:
        raise NotFound(N_("the home folder is missing in the container"))
    uid, gid = (int(x) for x in owner.stdout.split()[:2])
    kind = runtime.instances.exec(container, ["stat", "-c", "%F", directory], timeout=15)
    if not kind.ok or kind.stdout.strip() != "directory":
        raise NotFound(N_("no such folder in the home: %(path)s"), values={"path": folder[:200]})
    temporary = posixpath.join(directory, f".{secrets.token_hex(6)}.labgpu-upload")
    written = 0

    def limited() -> Iterator[bytes]:
        nonlocal written
        for chunk in chunks:
            written += len(chunk)
            if written > limit:
                raise UploadTooLarge(
                    N_("the file is larger than %(mb)s MiB"), values={"mb": svc.settings.upload_max_mb}
                )
            yield chunk

    try:
        runtime.instances.push_file(
            container, temporary, limited(), uid=uid, gid=gid, mode=0o644, timeout=600
        )
        moved = runtime.instances.exec(container, ["mv", "-f", "--", temporary, final], timeout=60)
        if not moved.ok:
            raise BadInput(
                N_("cannot write %(name)s: %(reason)s"), values={"name": name, "reason": moved.stderr[-200:]}
            )
    except BaseException:
        with contextlib.suppress(LabgpuError):
            runtime.instances.exec(container, ["rm", "-f", "--", temporary], timeout=30)
        raise
    with svc.session() as session:
        svc.audit(session, "files.upload", member, path=posixpath.relpath(final, home), size=written)
    return written
