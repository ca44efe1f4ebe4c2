"""The portal's vendored browser files are the npm packages' files that the manifest names (a hand edit, or
a file copied from another version, fails here; scripts/vendor-static re-vendors them)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import labgpu.web

STATIC = Path(labgpu.web.__file__).parent / "static"
MANIFEST = STATIC / "vendor" / "manifest.json"


def test_every_vendored_file_is_the_one_of_its_package_version() -> None:
    manifest = json.loads(MANIFEST.read_text())
    for package in manifest["packages"]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", package["version"]), package["name"]
        assert package["integrity"].startswith("sha512-"), package["name"]
        assert set(package["sha256"]) == set(package["files"].values()), package["name"]
        for target, digest in package["sha256"].items():
            data = (STATIC / "vendor" / target).read_bytes()
            assert hashlib.sha256(data).hexdigest() == digest, (
                f"{target} is not {package['name']}@{package['version']}'s"
            )
        assert any(t.endswith("LICENSE") for t in package["files"].values()), f"{package['name']}: no licence"


def test_the_terminal_page_loads_only_files_that_are_there() -> None:
    template = (STATIC.parent / "templates" / "terminal.html").read_text()
    paths = re.findall(r'(?:src|href)="/static/([^"]+)"', template)
    assert {"vendor/xterm/xterm.js", "vendor/xterm/addon-fit.js", "terminal.js"} <= set(paths)
    for path in paths:
        assert (STATIC / path).is_file(), path
