"""The settings as a reference: `labgpu config show` and docs/configuration.md's table (scripts/gen-docs;
a test keeps them equal), generated from the settings model."""

from __future__ import annotations

from labgpu.settings import Settings


def iter_settings_help() -> list[tuple[str, str, str]]:
    """(name, default, help) for every setting, for docs and `labgpu config show`."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        rows.append((name, "" if default is None else str(default), field.description or ""))
    return rows


def settings_reference_markdown() -> str:
    """docs/configuration.md's reference table, generated from the settings model (a test keeps them equal)."""
    lines = [
        "| setting | environment variable | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for name, default, help_text in iter_settings_help():
        shown = f"`{default}`" if default else "(empty)"
        lines.append(f"| `{name}` | `LABGPU_{name.upper()}` | {shown} | {help_text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
