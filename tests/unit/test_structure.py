"""The layout the code keeps (docs/design.md, "Where things live"), checked on the real tree, and each check
shown to fail on a copy of the tree broken on purpose.

- the import contracts of pyproject.toml (`lint-imports`): layers, the features' one-way order, private
  modules used only inside their package, no import cycles, system/ apart from the other adapters;
- no LXD/Incus REST path outside runtime/ (so the container-safety tests, which watch runtime calls, see
  every daemon call);
- no module over 600 lines (the store's migrations aside: each is one frozen step);
- the same feature names in services/, cli/ and web/routes/.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "labgpu"
MAX_LINES = 600
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# A REST path of the daemons' API, as code would write it: "/1.0/instances", f"/1.0/...", '/1.0'.
REST_PATH = re.compile(r"""(?<![\w.])[rfb]?["']/1\.0(?:["'/?])""")
# The gateway helper runs on a host as root with no labgpu installed beside it but the helper: it reads
# the daemon over its own socket (docs/admin/gateway.md).
REST_PATH_ALLOWED = {"runtime", "gateway/helper.py"}


def rest_paths_outside_runtime(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.split("/")[0] in REST_PATH_ALLOWED or rel in REST_PATH_ALLOWED:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if REST_PATH.search(line):
                found.append(f"{rel}:{number}: {line.strip()}")
    return found


def oversized_modules(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("store/migrations/"):
            continue
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            found.append(f"{rel}: {lines} lines")
    return found


def lint_imports(src: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with pyproject.toml's contracts, on the labgpu package found under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(args, cwd=src, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of src/labgpu to break (the Python files only)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(SRC, src / "labgpu", ignore=shutil.ignore_patterns("__pycache__", "*.mo", "static"))
    return src


def _broken(tree: Path, module: str, line: str) -> Path:
    """A fresh copy of ``tree`` with ``line`` appended to ``module`` (a path under labgpu/)."""
    copy = tree.parent / f"broken-{module.replace('/', '-')}"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(tree, copy)
    target = copy / "labgpu" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    return copy


def test_the_import_contracts_hold() -> None:
    result = lint_imports(SRC.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("contract", "module", "line"),
    [
        # An adapter reaching up into the services.
        ("layers", "runtime/endpoint.py", "from labgpu.services import members"),
        # hosts is below members: it may not use it.
        ("features", "services/hosts/_doctor.py", "from labgpu.services import members"),
        # The web using a private module of a feature instead of its public face.
        ("public-faces", "web/routes/hosts.py", "import labgpu.services.members._records"),
        # system/ using the daemons' client: it wraps the operating system only.
        ("system", "system/sysctl.py", "import labgpu.runtime.client"),
        # Two modules of one package importing each other.
        ("acyclic", "services/gpus/_booking_records.py", "import labgpu.services.gpus._bookings"),
    ],
)
def test_each_import_contract_fails_when_broken(
    tree_copy: Path, contract: str, module: str, line: str
) -> None:
    assert lint_imports(tree_copy, contract).returncode == 0  # the copy as it is keeps the contract
    result = lint_imports(_broken(tree_copy, module, line), contract)
    assert result.returncode != 0
    assert "1 broken" in result.stdout, result.stdout


def test_no_daemon_rest_path_outside_runtime() -> None:
    assert rest_paths_outside_runtime(SRC) == []


def test_a_rest_path_outside_runtime_is_found(tmp_path: Path) -> None:
    (tmp_path / "services").mkdir()
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "instances.py").write_text('PATH = "/1.0/instances"\n')
    (tmp_path / "services" / "inventory.py").write_text(
        'def f(c, name):\n    return c.request("GET", f"/1.0/instances/{name}")\n# "/1.0 in a comment"\n'
    )
    assert rest_paths_outside_runtime(tmp_path) == [
        'services/inventory.py:2: return c.request("GET", f"/1.0/instances/{name}")'
    ]


def test_no_module_is_over_600_lines() -> None:
    assert oversized_modules(SRC) == []


def test_an_oversized_module_is_found(tmp_path: Path) -> None:
    (tmp_path / "store" / "migrations").mkdir(parents=True)
    (tmp_path / "big.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "ok.py").write_text("x = 1\n" * MAX_LINES)
    (tmp_path / "store" / "migrations" / "0001_first.py").write_text("x = 1\n" * 2000)
    assert oversized_modules(tmp_path) == [f"big.py: {MAX_LINES + 1} lines"]


def _features(directory: Path) -> set[str]:
    return {
        p.stem
        for p in directory.iterdir()
        if not p.name.startswith("_") and (p.suffix == ".py" or p.is_dir())
    }


def test_services_cli_and_web_routes_share_the_feature_names() -> None:
    """`labgpu member ...`, /api/v1/members/... and the member pages lead to one name: members."""
    features = {p.name for p in (SRC / "services").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert features == {"hosts", "members", "gpus", "templates", "portal", "ops", "notify"}
    assert features <= _features(SRC / "cli")
    assert features <= _features(SRC / "web" / "routes")
