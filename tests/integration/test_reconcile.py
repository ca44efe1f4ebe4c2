"""`labgpu reconcile` on real daemons: drift repaired, foreign and orphan instances left alone."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.instances import Instance
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._listing import get_member
from labgpu.services.members._power import set_power
from labgpu.services.members._records import container_spec, load_member
from labgpu.services.members._ssh import wait_for_ssh
from labgpu.services.ops._reconcile import reconcile
from labgpu.store.models import AuditEvent, Member, MemberState
from tests.conftest import Cleanup, LabgpuEnv, unique_name

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: LabgpuEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env.env(), capture_output=True, text=True, timeout=600)


def snapshot(inst: Instance) -> tuple[dict[str, str], dict[str, dict[str, str]], str]:
    config = {k: v for k, v in inst.config.items() if not k.startswith("volatile.")}
    return config, inst.devices, inst.status


def reconcile_audits(env: LabgpuEnv) -> list[AuditEvent]:
    svc = env.services()
    with svc.session() as session:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.action == "reconcile")))
        session.expunge_all()
        return rows


def test_drift_is_repaired_and_foreign_and_orphan_instances_are_left_alone(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient, busybox_image: str, cleanup: Cleanup
) -> None:
    svc = labgpu_env.services()
    name = unique_name("rc")
    sheet = add_member(svc, validate_request(svc, name=name, cpu=1), wait_ssh=False)
    with svc.session() as session:
        spec = container_spec(svc, load_member(session, name))

    # Not labgpu's, and labgpu's but nobody's: both must come out of reconcile untouched.
    foreign = cleanup.instance(unique_name("foreign"))
    runtime.instances.create(foreign, image=busybox_image, config={"user.someone": "x"})
    orphan = cleanup.instance(unique_name("orphan"))
    runtime.instances.create(orphan, image=busybox_image, config={"user.labgpu.owner": unique_name("ghost")})
    untouched = {n: snapshot(runtime.instances.get(n)) for n in (foreign, orphan)}

    # Drift: owner key gone, a limit changed, the SSH proxy gone, the home moved, a stale
    # labgpu device, and the container stopped behind labgpu's back.
    home_dev = dict(runtime.instances.get(name).devices["labgpu-home"], path="/mnt/elsewhere")
    runtime.instances.update(
        name,
        config={"user.labgpu.owner": None, "limits.cpu": "2"},
        devices={
            "labgpu-ssh": None,
            "labgpu-home": home_dev,
            "labgpu-vnc": {"type": "proxy", "listen": "tcp:127.0.0.1:1", "connect": "tcp:127.0.0.1:5901"},
        },
    )
    runtime.instances.stop(name, force=True)
    drifted = snapshot(runtime.instances.get(name))

    # --dry-run: says everything, changes nothing.
    r = labgpu(labgpu_env, "reconcile", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would repair" in r.stdout and name in r.stdout and "Traceback" not in r.stderr
    dry = reconcile(svc, dry_run=True)
    planned = {(a.action, a.detail.split(" (")[0]) for a in dry.actions if a.member == name}
    assert planned == {
        ("config", f"set user.labgpu.owner='{name}'"),
        ("config", "set limits.cpu='1'"),
        ("device", "add missing device labgpu-ssh"),
        ("device", "restore device labgpu-home"),
        ("remove-device", "remove stale device labgpu-vnc"),
        ("start", f"container {name} is stopped: start it"),
    }
    assert not any(a.done for a in dry.actions) and not dry.changed
    assert snapshot(runtime.instances.get(name)) == drifted
    assert reconcile_audits(labgpu_env) == []
    kinds = {a.member: a.action for a in dry.actions}
    assert kinds[foreign] == "foreign" and kinds[orphan] == "orphan"

    # The real run repairs it all, in place.
    report = reconcile(svc)
    mine = [a for a in report.actions if a.member == name]
    assert len(mine) == 6 and all(a.done and a.error is None for a in mine), mine
    inst = runtime.instances.get(name)
    assert inst.status == "Running"
    assert {k: inst.config.get(k) for k in spec.config()} == spec.config()
    assert inst.devices == spec.devices()
    wait_for_ssh("127.0.0.1", sheet.ssh_port, timeout=60)
    assert {n: snapshot(runtime.instances.get(n)) for n in (foreign, orphan)} == untouched
    orphan_line = next(a for a in report.actions if a.member == orphan)
    assert f"delete --force {orphan}" in orphan_line.detail and not orphan_line.done

    # Recorded once, by whoever ran it.
    (event,) = reconcile_audits(labgpu_env)
    assert event.actor == "test@cli"
    assert event.detail is not None and len(event.detail["actions"]) == 6

    # And then there is nothing left to do.
    again = reconcile(svc)
    assert [a for a in again.actions if a.member == name] == [] and not again.changed
    r = labgpu(labgpu_env, "reconcile", "--json")
    assert r.returncode == 0, r.stderr
    assert [a for a in json.loads(r.stdout)["actions"] if a["member"] == name] == []


def test_missing_container_is_recreated_home_kept_and_a_stopped_member_stays_stopped(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient, busybox_image: str
) -> None:
    svc = labgpu_env.services()
    name = unique_name("rc")
    sheet = add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    data = Path(sheet.home) / "thesis.tex"
    data.write_text("chapter 1\n")
    uid = os.stat(sheet.home).st_uid

    # Deleted by hand: back, from the template, with the same home and port.
    runtime.instances.stop(name, force=True)
    runtime.instances.delete(name)
    report = reconcile(svc)
    (action,) = [a for a in report.actions if a.member == name]
    assert (action.action, action.done) == ("recreate", True), action
    assert f"labgpu member passwd {name}" in action.detail
    inst = runtime.instances.get(name)
    assert inst.status == "Running" and inst.label("owner") == name
    assert inst.devices["labgpu-ssh"]["listen"] == f"tcp:127.0.0.1:{sheet.ssh_port}"
    assert data.read_text() == "chapter 1\n" and os.stat(sheet.home).st_uid == uid
    wait_for_ssh("127.0.0.1", sheet.ssh_port, timeout=60)

    # A member stopped on purpose is not started.
    set_power(svc, name, "stop", force=True)
    assert [a for a in reconcile(svc).actions if a.member == name] == []
    assert runtime.instances.get(name).status == "Stopped"

    # ... and when its container is missing, it comes back stopped.
    runtime.instances.delete(name)
    (action,) = [a for a in reconcile(svc).actions if a.member == name]
    assert (action.action, action.done, action.error) == ("recreate", True, None)
    inst = runtime.instances.get(name)
    assert inst.status == "Stopped" and inst.label("owner") == name

    # An instance that is not labgpu's took the container's name: reported, never touched.
    runtime.instances.delete(name)
    runtime.instances.create(name, image=busybox_image, config={"user.someone": "x"})
    before = snapshot(runtime.instances.get(name))
    report = reconcile(svc)
    (action,) = [a for a in report.actions if a.member == name]
    assert action.action == "conflict" and not action.done
    assert snapshot(runtime.instances.get(name)) == before
    assert data.read_text() == "chapter 1\n"


def test_a_removal_that_stopped_half_way_is_finished_and_the_home_archived(
    labgpu_env: LabgpuEnv, runtime: RuntimeClient
) -> None:
    lifecycle = pytest.importorskip("labgpu.services.members._lifecycle")
    if not hasattr(lifecycle, "finish_removal"):
        pytest.skip("services.lifecycle has no finish_removal yet")
    svc = labgpu_env.services()
    name = unique_name("rc")
    sheet = add_member(svc, validate_request(svc, name=name), wait_ssh=False)
    (Path(sheet.home) / "results.csv").write_text("1,2\n")
    # `member rm` marked the member and was killed before it deleted anything.
    with svc.session() as session:
        load_member(session, name).state = MemberState.REMOVING

    dry = reconcile(svc, dry_run=True)
    assert [(a.action, a.done) for a in dry.actions if a.member == name] == [("finish-removal", False)]
    assert runtime.instances.exists(name)

    report = reconcile(svc)
    (action,) = [a for a in report.actions if a.member == name]
    assert (action.action, action.done, action.error) == ("finish-removal", True, None)
    assert not runtime.instances.exists(name)
    with svc.session() as session:
        assert session.scalars(select(Member).where(Member.name == name)).first() is None
    assert not Path(sheet.home).exists()
    archived = list(Path(labgpu_env.overrides["home_archive"]).glob(f"{name}*/results.csv"))
    assert [p.read_text() for p in archived] == ["1,2\n"]


def test_an_approved_application_the_portal_never_finished_is_provisioned(labgpu_env: LabgpuEnv) -> None:
    """Approved in the portal, which then went down: `labgpu reconcile` makes the member and the account."""
    from labgpu.services.context import Actor
    from labgpu.services.portal import _applications as applications
    from labgpu.services.portal._accounts import get_account

    svc = labgpu_env.services()
    name = unique_name("ra")
    app = applications.submit(svc, name=name, email=f"{name}@lab.test", password="quiet-walnut-58-harbor")
    admin = dataclasses.replace(svc, actor=Actor("boss"))
    applications.approve(admin, app.id, applications.Overrides(gpus="none"))

    r = labgpu(labgpu_env, "reconcile", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    planned = [a for a in json.loads(r.stdout)["actions"] if a["action"] == "application"]
    assert [(a["member"], a["done"]) for a in planned] == [(name, False)]
    assert applications.get_application(svc, app.id).status == "approved"

    r = labgpu(labgpu_env, "reconcile", "--json")
    assert r.returncode == 0, r.stderr
    done = [a for a in json.loads(r.stdout)["actions"] if a["action"] == "application"]
    assert [(a["member"], a["done"], a["error"]) for a in done] == [(name, True, None)]
    assert applications.get_application(svc, app.id).status == "done"
    assert get_member(svc, name).status == "Running"
    assert get_account(svc, name).has_password  # the applicant's own password, moved to the portal account
    # Nothing left to do the second time.
    r = labgpu(labgpu_env, "reconcile", "--json")
    assert not [a for a in json.loads(r.stdout)["actions"] if a["action"] == "application"]
