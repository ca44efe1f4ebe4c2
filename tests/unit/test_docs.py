"""Docs that must follow the code."""

from __future__ import annotations

import re
from pathlib import Path

from labgpu.cli.settings_reference import settings_reference_markdown
from labgpu.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented_with_its_help() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert settings_reference_markdown() in doc, "docs/configuration.md is stale: run scripts/gen-docs"
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no help text"
        assert f"`LABGPU_{name.upper()}`" in doc


def test_readme_gives_the_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    # In a root shell, as given: a minimal Debian has no sudo binary, and the scripts never call it.
    assert "```sh\nscripts/quickstart\n```" in readme
    assert "```sh\nscripts/test\n```" in readme
    for script in ("quickstart", "test", "install-deps", "start-daemons", "start-postgres"):
        code = [
            line
            for line in (ROOT / "scripts" / script).read_text().splitlines()
            if not line.lstrip().startswith("#")
        ]
        assert not any(re.search(r"(^|[;&|(]\s*)sudo\s", line) for line in code), script
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec scripts/test" in ci
