"""Template builds for real, on LXD and on Incus: templates/minimal.yaml built offline (debootstrap,
cached after the first build), a member's container from it answering SSH, a second build making a
new version, remove/export/import, and the failures: a bad spec is refused naming the line before
anything is made; a failing step names the step and its output and leaves no builder and no image."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labgpu.errors import Conflict
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.errors import RuntimeNotFound
from labgpu.services.templates._build import build_template
from labgpu.services.templates._build_report import BuildReporter
from labgpu.services.templates._catalog import (
    PROP_TEMPLATE,
    catalog,
    export_template,
    import_template,
    remove_template,
    version_key,
)
from labgpu.services.templates._spec_loading import load_spec
from tests.conftest import Cleanup, LabgpuEnv

# One lane (tests/lanes.py) for the module: `built` is made once per daemon, and no other build may leave a
# builder's temporary base image while a test checks that there is none.
pytestmark = [pytest.mark.integration, pytest.mark.lane("template-build")]

ROOT = Path(__file__).resolve().parents[2]
LABGPU = [sys.executable, "-m", "labgpu.cli"]


def spec_file(folder: Path, name: str, *, extra: str = "", source: str = "minimal.yaml") -> Path:
    """templates/<source> renamed to ``name`` (and ``extra`` YAML appended), written to ``folder``."""
    text = (ROOT / "templates" / source).read_text()
    lines = [f"name: {name}" if line.startswith("name:") else line for line in text.splitlines()]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def env_for(runtime: RuntimeClient, folder: Path) -> LabgpuEnv:
    return LabgpuEnv(
        overrides={
            "state_dir": str(folder / "state"),
            "home_base": str(folder / "home"),
            "home_archive": str(folder / "archive"),
            "runtime_url": f"unix://{runtime.endpoint.socket_path}",
            "network_mode": "none",
        },
        runtime=runtime,
    )


def remove_everything_of(runtime: RuntimeClient, name: str) -> None:
    for inst in runtime.instances.all(with_state=False):
        if inst.config.get("user.labgpu.builder-template") == name or inst.config.get(
            "user.labgpu.template", ""
        ).startswith(name):
            if inst.status != "Stopped":
                runtime.instances.stop(inst.name, force=True)
            runtime.instances.delete(inst.name)
    for image in runtime.images.all():
        if image.properties.get(PROP_TEMPLATE) == name:
            with contextlib.suppress(RuntimeNotFound):
                runtime.images.delete(image.fingerprint)


def builders_of(runtime: RuntimeClient, name: str) -> list[str]:
    return [
        i.name
        for i in runtime.instances.all(with_state=False)
        if i.config.get("user.labgpu.builder-template") == name
    ]


def images_of(runtime: RuntimeClient, name: str) -> list[str]:
    return [i.fingerprint for i in runtime.images.all() if i.properties.get(PROP_TEMPLATE) == name]


class Recorder(BuildReporter):
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.done: list[str] = []
        self.total = 0

    def start(self, name: str, total: int) -> None:
        self.total = total

    def step(self, index: int, total: int, name: str, title: str) -> None:
        self.steps.append(f"{index}/{total} {name}")

    def step_done(self, index: int, total: int, name: str, seconds: float) -> None:
        self.done.append(name)


@dataclass
class Built:
    name: str
    version: str
    fingerprint: str
    env: LabgpuEnv
    reporter: Recorder


@pytest.fixture(scope="module")
def built(runtime: RuntimeClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """templates/minimal.yaml, renamed, built once per daemon."""
    folder = tmp_path_factory.mktemp("template")
    name = f"t-{secrets.token_hex(4)}"
    env = env_for(runtime, folder)
    reporter = Recorder()
    try:
        result = build_template(env.services(), load_spec(spec_file(folder, name)), reporter=reporter)
        yield Built(name, result.version, result.fingerprint, env, reporter)
    finally:
        remove_everything_of(runtime, name)


def wait_for_banner(port: int, timeout: float = 60) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                banner = s.recv(64)
                if banner:
                    return banner
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no SSH banner on 127.0.0.1:{port}")
        time.sleep(0.5)


def test_minimal_spec_builds_offline_and_a_member_container_from_it_answers_ssh(
    built: Built, runtime: RuntimeClient, labgpu_env: LabgpuEnv, cleanup: Cleanup
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    # Published as NAME and NAME/VERSION, with what the build recorded.
    image = runtime.images.get(built.fingerprint)
    assert set(image.aliases) == {built.name, f"{built.name}/{built.version}"}
    assert image.properties["labgpu.template"] == built.name
    assert image.properties["labgpu.version"] == built.version
    assert len(image.properties["labgpu.spec-hash"]) == 16
    assert image.properties["labgpu.built-at"].endswith("Z")
    # Progress named every step, in order; the builder and the temporary base are gone.
    assert built.reporter.steps[0] == f"1/{built.reporter.total} base"
    assert built.reporter.done == ["base", "builder", "user", "sshd", "clean", "publish"]
    assert builders_of(runtime, built.name) == []
    assert not [i for i in runtime.images.all() if i.properties.get("labgpu.builder-base")]

    # member add makes a container from it that answers SSH.
    svc = labgpu_env.services()
    sheet = add_member(svc, validate_request(svc, name="tmpl", template=built.name))
    assert wait_for_banner(sheet.ssh_port).startswith(b"SSH-2.0-OpenSSH")
    # Every container gets its own host keys (none were baked into the template).
    other = cleanup.instance(f"tk-{secrets.token_hex(3)}")
    runtime.instances.create(
        other, image=built.name, profiles=[labgpu_env.overrides["profile_name"]], start=True
    )
    key = "/etc/ssh/ssh_host_ed25519_key.pub"
    keys = []
    for container in (sheet.container, other):
        for _ in range(60):
            result = runtime.instances.exec(container, ["cat", key])
            if result.ok:
                break
            time.sleep(0.5)
        keys.append(result.stdout)
    assert keys[0] and keys[1] and keys[0] != keys[1]


def test_building_again_makes_a_new_version_that_member_reset_moves_to_keeping_the_home(
    built: Built, runtime: RuntimeClient, labgpu_env: LabgpuEnv
) -> None:
    from labgpu.services.members._add import add_member, validate_request
    from labgpu.services.members._lifecycle import reset_member

    svc = labgpu_env.services()
    sheet = add_member(svc, validate_request(svc, name="treset", template=built.name), wait_ssh=False)
    (Path(sheet.home) / "notes.txt").write_text("kept\n")
    container = sheet.container
    assert runtime.instances.get(container).config["volatile.base_image"] == built.fingerprint

    folder = Path(built.env.overrides["state_dir"]).parent
    again = build_template(svc, load_spec(spec_file(folder, built.name)))
    assert version_key(again.version) > version_key(built.version)
    assert runtime.images.resolve_alias(built.name) == again.fingerprint
    template, _ = catalog(runtime).find(built.name)
    assert [v.version for v in template.versions][:2] == [again.version, built.version]
    assert template.latest is not None and template.latest.version == again.version
    _, old = catalog(runtime).find(f"{built.name}/{built.version}")
    assert old is not None and old.containers == (container,)

    # member reset rebuilds the container from NAME, now the new version; the home stays.
    reset = reset_member(svc, "treset")
    assert wait_for_banner(reset.ssh_port).startswith(b"SSH-2.0-OpenSSH")
    assert runtime.instances.get(container).config["volatile.base_image"] == again.fingerprint
    assert (Path(sheet.home) / "notes.txt").read_text() == "kept\n"

    # The version in use cannot go without --force; the one no longer used can.
    _, newest = catalog(runtime).find(f"{built.name}/{again.version}")
    assert newest is not None and newest.containers == (container,)
    with pytest.raises(Conflict, match="used by 1 container"):
        remove_template(svc, f"{built.name}/{again.version}")
    removed = remove_template(svc, f"{built.name}/{built.version}")
    assert removed.removed == (f"{built.name}/{built.version}",)
    assert runtime.images.find(built.fingerprint) is None
    assert runtime.images.resolve_alias(built.name) == again.fingerprint


def test_export_then_import_brings_a_template_back(
    built: Built, runtime: RuntimeClient, tmp_path: Path
) -> None:
    svc = built.env.services()
    template, _ = catalog(runtime).find(built.name)
    latest = template.latest
    assert latest is not None
    files = export_template(runtime, built.name, tmp_path / "t.tar.gz")
    assert files == [tmp_path / "t.tar.gz"]
    remove_template(svc, latest.ref, force=True)
    assert runtime.images.find(latest.fingerprint) is None

    imported = import_template(svc, files)
    assert (imported.name, imported.version, imported.fingerprint) == (
        built.name,
        latest.version,
        latest.fingerprint,
    )
    assert imported.latest
    assert runtime.images.resolve_alias(built.name) == latest.fingerprint
    assert runtime.images.resolve_alias(latest.ref) == latest.fingerprint
    # Importing it again changes nothing.
    assert import_template(svc, files).already_there


def cli(runtime: RuntimeClient, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABGPU_")}
    env.update({f"LABGPU_{k.upper()}": v for k, v in env_for(runtime, folder).overrides.items()})
    return subprocess.run([*LABGPU, *args], env=env, capture_output=True, text=True, timeout=600, cwd=folder)


def test_a_bad_spec_is_refused_naming_the_line_before_anything_is_made(
    runtime: RuntimeClient, tmp_path: Path
) -> None:
    name = f"t-{secrets.token_hex(4)}"
    path = tmp_path / "x.yaml"
    path.write_text(
        f"name: {name}\n"
        "description: a typo and a wrong type\n"
        "base:\n"
        "  debootstrap:\n"
        "    suite: bookworm\n"
        "user: {uid: '1000'}\n"
        "pakages: [vim]\n"
    )
    r = cli(runtime, tmp_path, "template", "build", "x.yaml")
    assert r.returncode == 2, r.stderr
    assert "x.yaml:7: unknown key 'pakages' (did you mean 'packages'?)" in r.stderr
    assert "x.yaml:6: user.uid: should be a whole number" in r.stderr
    assert "Traceback" not in r.stderr
    path.write_text(f"name: {name}\n")
    r = cli(runtime, tmp_path, "template", "build", "x.yaml")
    assert r.returncode == 2
    assert "x.yaml:1: missing key 'base'" in r.stderr
    assert builders_of(runtime, name) == []
    assert images_of(runtime, name) == []


def test_a_failing_step_names_the_step_and_output_and_leaves_no_builder_and_no_image(
    runtime: RuntimeClient, tmp_path: Path
) -> None:
    name = f"t-{secrets.token_hex(4)}"
    commands = 'commands:\n  - [sh, -c, "echo output-of-the-step; false"]\n'
    spec = spec_file(tmp_path, name, extra=commands)
    try:
        r = cli(runtime, tmp_path, "template", "build", spec.name)
        assert r.returncode == 1, r.stderr
        last = r.stderr.strip().splitlines()[-1]
        assert "'command 1' failed (exit 1)" in last
        assert "sh -c 'echo output-of-the-step; false'" in last
        assert "output-of-the-step" in r.stderr
        assert builders_of(runtime, name) == []
        assert images_of(runtime, name) == []
    finally:
        remove_everything_of(runtime, name)


def test_a_step_longer_than_one_wait_request_is_waited_for(
    runtime: RuntimeClient, busybox_image: str, cleanup: Cleanup
) -> None:
    """Build steps run for many minutes; waiting is split into /wait requests, which Incus ends with an
    error ("context deadline exceeded") and LXD with the still-running operation."""
    name = cleanup.instance(f"tw-{secrets.token_hex(3)}")
    runtime.instances.create(name, image=busybox_image, profiles=["default"], start=True)
    client = RuntimeClient(runtime.endpoint, operation_timeout=60)
    client.wait_chunk = 1.0
    try:
        result = client.instances.exec(name, ["sh", "-c", "sleep 3; echo done"])
    finally:
        client.close()
    assert result.ok and result.stdout == "done\n"
