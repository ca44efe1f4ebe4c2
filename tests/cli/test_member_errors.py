"""`labgpu member add` refusing bad requests: one clear line, the right exit code, nothing left behind.

Each case runs the real CLI as a subprocess (so the exit code, stderr and the
absence of a traceback are what an admin sees) and then checks that no member
row, port, home folder or container was made.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from labgpu.runtime.client import RuntimeClient
from labgpu.services.members._add import add_member, validate_request
from labgpu.store.models import Member, PortMap
from tests.conftest import Cleanup, LabgpuEnv, unique_name
from tests.integration.sshutil import make_key

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env, capture_output=True, text=True, timeout=600)


def assert_one_clear_line(r: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    """Exit ``code``; stderr is one `error:` line (plus at most one `hint:`); no traceback, no stdout."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stdout.strip() == ""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), r.stderr
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), r.stderr
    for needle in needles:
        assert needle in lines[0], r.stderr


def store_counts(env: LabgpuEnv) -> tuple[int, int]:
    """(members, port maps) in the test's store."""
    svc = env.services()
    with svc.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Member)) or 0,
            session.scalar(select(func.count()).select_from(PortMap)) or 0,
        )


def assert_nothing_left(env: LabgpuEnv, runtime: RuntimeClient | None, name: str) -> None:
    svc = env.services()
    with svc.session() as session:
        assert session.scalars(select(Member).where(Member.name == name)).first() is None
    assert not (Path(env.overrides["home_base"]) / name).exists()
    if runtime is not None:
        assert [i.name for i in runtime.instances.all(with_state=False) if i.label("owner") == name] == []


# Without a daemon: the request is refused before anything is touched ------------------------------


@pytest.fixture
def offline_env(tmp_path: Path) -> LabgpuEnv:
    """Settings whose daemon cannot be reached: any step that needed it would fail differently."""
    overrides = {
        "state_dir": str(tmp_path / "state"),
        "home_base": str(tmp_path / "home"),
        "runtime_url": "unix:///nonexistent.sock",
    }
    return LabgpuEnv(overrides=overrides, runtime=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("Alice", "invalid member name"),  # upper case: not a portable Linux user name
        ("a" * 33, "too long"),
        ("root", "reserved"),
        ("ubuntu", "reserved"),  # the container's own login user
        ("1alice", "invalid member name"),  # must start with a letter
        ("a--b", "invalid member name"),  # single hyphens only: "a--b" and "a-b" are too easily confused
        ("bob-", "invalid member name"),
        ("bo_b", "invalid member name"),  # not valid in an LXD/Incus instance name
        ("a", "invalid member name"),  # at least 2 characters
    ],
)
def test_invalid_names_are_refused_before_anything_is_touched(
    offline_env: LabgpuEnv, name: str, needle: str
) -> None:
    r = labgpu(offline_env.env(), "member", "add", name)
    assert_one_clear_line(r, 2, needle)
    assert_nothing_left(offline_env, None, name)


def test_a_private_key_is_refused(offline_env: LabgpuEnv, tmp_path: Path) -> None:
    key = make_key(tmp_path, "k")
    r = labgpu(offline_env.env(), "member", "add", "alice", "--ssh-key", str(key))
    assert_one_clear_line(r, 2, "PRIVATE key")
    assert_nothing_left(offline_env, None, "alice")


def test_unreachable_daemon_is_a_failure_and_leaves_nothing(offline_env: LabgpuEnv, tmp_path: Path) -> None:
    key = make_key(tmp_path, "k")
    r = labgpu(offline_env.env(), "member", "add", "alice", "--ssh-key", f"{key}.pub")
    assert_one_clear_line(r, 1, "/nonexistent.sock")
    assert_nothing_left(offline_env, None, "alice")
    assert store_counts(offline_env) == (0, 0)


# With the real daemon ----------------------------------------------------------------------------


@pytest.mark.integration
def test_unknown_template(labgpu_env: LabgpuEnv, runtime: RuntimeClient) -> None:
    name = unique_name("er")
    r = labgpu(labgpu_env.env(), "member", "add", name, "--template", f"no-such-{secrets.token_hex(3)}")
    assert_one_clear_line(r, 2, "unknown template")
    assert_nothing_left(labgpu_env, runtime, name)
    assert store_counts(labgpu_env) == (0, 0)


@pytest.mark.integration
def test_name_of_an_instance_that_is_not_labgpus(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient, busybox_image: str, cleanup: Cleanup
) -> None:
    name = cleanup.instance(unique_name("er"))
    runtime.instances.create(name, image=busybox_image, description="someone else's")
    before = runtime.instances.get(name)
    r = labgpu(labgpu_env.env(), "member", "add", name)
    assert_one_clear_line(r, 2, "already exists", "not labgpu's")
    after = runtime.instances.get(name)
    assert (after.config, after.devices, after.status) == (before.config, before.devices, before.status)
    assert_nothing_left(labgpu_env, runtime, name)
    assert store_counts(labgpu_env) == (0, 0)


@pytest.mark.integration
def test_taken_name_and_exhausted_port_range(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient, tmp_path: Path
) -> None:
    # A range of ONE port: the first member takes it.
    start = labgpu_env.overrides["port_range_start"]
    labgpu_env.overrides["port_range_end"] = start
    svc = labgpu_env.services()
    first = unique_name("er")
    sheet = add_member(svc, validate_request(svc, name=first), wait_ssh=False)
    home_file = Path(sheet.home) / "keep.txt"
    home_file.write_text("mine\n")
    assert store_counts(labgpu_env) == (1, 1)

    # The same name again: refused, the first member untouched.
    r = labgpu(labgpu_env.env(), "member", "add", first)
    assert_one_clear_line(r, 2, f"member {first} already exists")
    assert store_counts(labgpu_env) == (1, 1)
    assert home_file.read_text() == "mine\n"
    owned = [i for i in runtime.instances.all(with_state=False) if i.label("owner") == first]
    assert [(i.name, i.status) for i in owned] == [(first, "Running")]

    # A second member: no port left.
    second = unique_name("er")
    key = make_key(tmp_path, "k")
    r = labgpu(labgpu_env.env(), "member", "add", second, "--ssh-key", f"{key}.pub")
    assert_one_clear_line(r, 2, f"port range {start}-{start} is exhausted")
    assert_nothing_left(labgpu_env, runtime, second)
    assert store_counts(labgpu_env) == (1, 1)
    assert not os.path.exists(Path(labgpu_env.overrides["home_base"]) / second)
