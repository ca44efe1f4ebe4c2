"""The state dir's disk is full (a small tmpfs mounted as state_dir, filled): `member add` fails with
ONE clear line and a non-zero exit, and leaves nothing half-made (no container, no home, no member row);
once space is freed, the same `member add` works and every invariant holds."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from labgpu.errors import Unavailable
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.members._add import add_member, validate_request
from tests.conftest import Cleanup, LabgpuEnv, unique_name
from tests.reliability.conftest import Fault
from tests.reliability.harness import run_labgpu, steps

pytestmark = pytest.mark.integration


@pytest.fixture
def small_state_dir(labgpu_env: LabgpuEnv, tmp_path: Path) -> Iterator[Path]:
    """state_dir on its own 8 MiB tmpfs (unmounted at teardown)."""
    state = tmp_path / "small-state"
    state.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(state)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the fault suite runs as root): {r.stderr.strip()}")
    labgpu_env.overrides["state_dir"] = str(state)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


@pytest.mark.scenario("disk-full")
@pytest.mark.parametrize("step", steps("disk-full", ["state-dir"]))
def test_member_add_on_a_full_state_dir(
    labgpu_env: LabgpuEnv, small_state_dir: Path, cleanup: Cleanup, fault: Fault, step: str
) -> None:
    env = labgpu_env.env()
    assert run_labgpu(env, "member", "list").returncode == 0  # the store exists
    name = cleanup.instance(unique_name("fd"))  # the store is unmounted before labgpu_env cleans up
    filler = _fill(small_state_dir)
    fault.inject()

    r = run_labgpu(env, "member", "add", name, "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "the disk is full" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
    # Nothing half-made.
    with pytest.raises(RuntimeNotFound):
        labgpu_env.runtime.instances.get(name)
    assert not (Path(labgpu_env.overrides["home_base"]) / name).exists()

    filler.unlink()
    r = run_labgpu(env, "member", "show", name)
    assert r.returncode == 2, r.stdout + r.stderr  # no row either
    r = run_labgpu(env, "member", "add", name, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    fault.check(labgpu_env.services(), owners={name})


@pytest.mark.scenario("disk-full")
@pytest.mark.parametrize("step", steps("disk-full", ["state-dir-while-open"]))
def test_the_disk_fills_while_labgpu_has_the_store_open(
    labgpu_env: LabgpuEnv, small_state_dir: Path, cleanup: Cleanup, fault: Fault, step: str
) -> None:
    """The store already open (a `labgpu serve`, a job runner): the write fails with labgpu's own error,
    one line (it was SQLAlchemy's OperationalError: a traceback in the CLI, a 500 in the portal)."""
    svc = labgpu_env.services()
    name = cleanup.instance(unique_name("fd"))
    filler = _fill(small_state_dir)
    fault.inject()
    with pytest.raises(Unavailable, match="the disk is full") as caught:
        add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    assert "\n" not in caught.value.message
    with pytest.raises(RuntimeNotFound):
        labgpu_env.runtime.instances.get(name)
    filler.unlink()
    add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    fault.check(labgpu_env.services(), owners={name})
