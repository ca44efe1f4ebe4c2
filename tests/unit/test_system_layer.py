"""system/ wraps the host's operating system the way runtime/ wraps the daemons: it never reaches up."""

from __future__ import annotations

import ast
from pathlib import Path

import labgpu

SRC = Path(labgpu.__file__).parent
ALLOWED = ("labgpu.errors", "labgpu.settings", "labgpu.domain", "labgpu.system")


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module if node.module != "labgpu" else "labgpu")
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return [name for name in found if name == "labgpu" or name.startswith("labgpu.")]


def test_system_imports_only_errors_settings_domain_and_itself() -> None:
    bad = sorted(
        f"{path.relative_to(SRC).as_posix()}: {name}"
        for path in (SRC / "system").rglob("*.py")
        for name in _imports(path)
        if name != "labgpu" and not name.startswith(ALLOWED)
    )
    assert bad == []


def test_no_rest_path_outside_runtime() -> None:
    """Only runtime/ writes LXD/Incus API paths (the gateway helper, a stand-alone script, has its own)."""
    bad = sorted(
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*.py")
        if not path.relative_to(SRC).as_posix().startswith("runtime/")
        and path.relative_to(SRC).as_posix() != "gateway/helper.py"
        and ('"/1.0' in path.read_text() or "/1.0/" in path.read_text())
    )
    assert bad == []
