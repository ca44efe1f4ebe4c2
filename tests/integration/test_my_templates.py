"""Members' own templates end to end on real LXD and Incus: save a snapshot of a member's container as a
template, the quotas, reset to it (what the member installed in the root filesystem comes back, the home is
untouched), the owner-only rule, and removal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import LabgpuEnv
from tests.integration.test_member_lifecycle import audit_actions, labgpu, member_row

pytestmark = pytest.mark.integration


def test_save_reset_to_and_remove_a_members_own_template(labgpu_env: LabgpuEnv) -> None:
    from labgpu.services.members._add import add_member, validate_request

    env, runtime = labgpu_env, labgpu_env.runtime
    env.overrides["member_template_quota"] = "1"
    svc = env.services()
    sheet = add_member(svc, validate_request(svc, name="tina"), wait_ssh=False)
    add_member(svc, validate_request(svc, name="otto"), wait_ssh=False)
    # Something the member installed in the root filesystem, and a file in the home.
    runtime.instances.exec("tina", ["sh", "-c", "echo installed > /opt/tool.txt"])
    home_file = Path(sheet.home) / "notes.txt"
    home_file.write_text("in the home\n")
    r = labgpu(env, "member", "snapshot", "tina", "with-tool")
    assert r.returncode == 0, r.stderr

    r = labgpu(env, "member", "template", "save", "tina", "with-tool", "--label", "mytools", "--json")
    assert r.returncode == 0, r.stderr
    saved = json.loads(r.stdout)
    alias = "member/tina/mytools"
    assert saved["alias"] == alias and saved["snapshot"] == "with-tool" and saved["size_bytes"] > 0
    image = runtime.images.get_by_alias(alias)
    assert image is not None and image.fingerprint == saved["fingerprint"]
    # Private, the owner's, and not a lab template (the lab's catalog does not list it).
    assert image.properties["labgpu.owner"] == "tina"
    assert "labgpu.template" not in image.properties
    assert image.extra.get("public") is False
    r = labgpu(env, "template", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert "member/tina" not in r.stdout

    # The quota (1 template) refuses a second one, before publishing anything.
    images_before = len(runtime.images.all())
    r = labgpu(env, "member", "template", "save", "tina", "--label", "second")
    assert r.returncode == 2 and "template quota reached" in r.stderr
    assert len(runtime.images.all()) == images_before
    assert runtime.images.resolve_alias("member/tina/second") is None

    # Another member's container is never made from it, not even by an admin.
    r = labgpu(env, "member", "reset", "otto", "--template", alias, "--yes")
    assert r.returncode == 2 and "another member's own template" in r.stderr

    # The owner's container changes after the save; a reset to the template brings back the saved root
    # filesystem, the home is untouched.
    runtime.instances.exec("tina", ["sh", "-c", "rm /opt/tool.txt; echo later > /opt/later.txt"])
    created = runtime.instances.get("tina").created_at
    r = labgpu(env, "member", "reset", "tina", "--template", alias, "--yes", "--json")
    assert r.returncode == 0, r.stderr
    assert runtime.instances.get("tina").created_at != created
    assert runtime.instances.pull_file("tina", "/opt/tool.txt") == b"installed\n"
    gone = runtime.instances.exec("tina", ["test", "-e", "/opt/later.txt"])
    assert gone.exit_code != 0
    assert home_file.read_text() == "in the home\n"
    assert runtime.instances.get("tina").config["user.labgpu.template"] == alias
    assert member_row(env, "tina").template == alias

    listed = json.loads(labgpu(env, "member", "template", "list", "tina", "--json").stdout)
    assert [t["alias"] for t in listed] == [alias] and listed[0]["in_use"] is True

    # Removal: the image goes; the container made from it keeps running; a reset goes back to the default.
    r = labgpu(env, "member", "template", "rm", "tina", "mytools", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["template_now"] == env.overrides["default_template"]
    assert runtime.images.resolve_alias(alias) is None
    assert runtime.images.find(saved["fingerprint"]) is None
    assert runtime.instances.state("tina").status == "Running"
    assert runtime.instances.pull_file("tina", "/opt/tool.txt") == b"installed\n"
    assert member_row(env, "tina").template is None
    assert json.loads(labgpu(env, "member", "template", "list", "--json").stdout) == []
    r = labgpu(env, "member", "template", "rm", "tina", "mytools", "--yes")
    assert r.returncode == 2 and "no template named mytools" in r.stderr
    assert {"member.template.save", "member.template.rm"} <= set(audit_actions(env, "tina"))


def test_a_save_past_the_size_quota_keeps_nothing(labgpu_env: LabgpuEnv) -> None:
    from labgpu.services.members._add import add_member, validate_request

    env, runtime = labgpu_env, labgpu_env.runtime
    env.overrides["member_template_quota_gib"] = "0.001"  # about 1 MiB: smaller than any real image
    svc = env.services()
    add_member(svc, validate_request(svc, name="ulla"), wait_ssh=False)
    images_before = {i.fingerprint for i in runtime.images.all()}

    r = labgpu(env, "member", "template", "save", "ulla", "--label", "big")
    assert r.returncode == 2 and "it was not kept" in r.stderr
    assert {i.fingerprint for i in runtime.images.all()} == images_before
    assert runtime.images.resolve_alias("member/ulla/big") is None
    assert json.loads(labgpu(env, "member", "template", "list", "ulla", "--json").stdout) == []
    # The snapshot taken for it stays (snapshots are the member's); nothing else was made.
    assert len(runtime.instances.snapshots("ulla")) == 1

    # Bad input: a clear message, exit 2, nothing made.
    for args, message in [
        (["--label", "Bad Label"], "invalid template label"),
        (["no-such-snapshot", "--label", "ok"], "no snapshot no-such-snapshot"),
        (["--label", ""], "--label"),
    ]:
        r = labgpu(env, "member", "template", "save", "ulla", *args)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
    r = labgpu(env, "member", "template", "save", "nobody", "--label", "x")
    assert r.returncode == 2 and "no member named nobody" in r.stderr
    assert {i.fingerprint for i in runtime.images.all()} == images_before
