"""Stand-alone programs labgpu installs on the host (the login gateway's), run by the host's Python."""

from __future__ import annotations

from pathlib import Path

from labgpu import __version__
from labgpu.system.commands import run
from labgpu.system.files import MARKER


def render_script(module_file: str, *, python: Path, call: str) -> str:
    """A stand-alone copy of a stdlib-only module, run by ``python -I -S``, ending in ``sys.exit(call)``."""
    source = Path(module_file).read_text()
    return (
        f"#!{python} -IS\n"
        f"{MARKER} {__version__} (`labgpu host gateway enable` writes it again; do not edit).\n"
        f"{source.rstrip()}\n\n\n"
        'if __name__ == "__main__":\n'
        f"    sys.exit({call})\n"
    )


def python_version(python: Path) -> tuple[int, ...]:
    """The (major, minor) version of the interpreter ``python``. Raises LabgpuError when it does not run."""
    version = run(
        [str(python), "-IS", "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
        what=f"checking {python}",
    ).split()
    return tuple(int(v) for v in version)


def check_compiles(python: Path, script: Path) -> None:
    """Have ``python`` compile ``script`` (catches a script the host's older Python cannot read).
    Raises LabgpuError with the interpreter's words."""
    run(
        [
            str(python),
            "-IS",
            "-c",
            "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')",
            str(script),
        ],
        what=f"checking {script} with {python}",
    )
