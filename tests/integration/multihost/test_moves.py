"""`labgpu member move` on real daemons: between cluster members and between standalone hosts (both
copy directions: pull and push), keeping home data, SSH login (at the new address and port) and the GPU
configuration (re-made for the new host's GPUs); and a move killed half-way, finished by reconcile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from labgpu.runtime.client import RuntimeClient
from labgpu.services.clients import HostClients, default_client
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._moves import move_member
from labgpu.services.members._power import set_power
from labgpu.services.members._set import parse_set_request, set_member
from labgpu.store.models import AuditEvent
from tests.integration.multihost.conftest import Daemon, HostsEnv, add_test_hosts
from tests.integration.sshutil import make_key, ssh_key

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(
    env: HostsEnv, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LABGPU, *args], env={**env.env(), **(extra_env or {})}, capture_output=True, text=True, timeout=600
    )


def containers_named(daemons: dict[str, Daemon], name: str) -> dict[str, Any]:
    """Where an instance of that name exists: host name -> Instance (cluster members by location)."""
    out = {}
    for host in ("s1", "s2"):
        inst = daemons[host].instances(here_only=False).get(name)
        if inst is not None:
            out[host] = inst
    inst = daemons["c1"].instances(here_only=False).get(name)
    if inst is not None:
        out[inst.location] = inst
    return out


def new_member(env: HostsEnv, svc: Any, name: str, host: str, key: Path, address: str, **kw: Any) -> Any:
    sheet = add_member(
        svc, validate_request(svc, name=name, ssh_keys=[Path(f"{key}.pub").read_text()], host=host, **kw)
    )
    return sheet


def test_move_between_cluster_members(
    hosts_env: HostsEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    svc = hosts_env.services()
    addresses = add_test_hosts(hosts_env, svc)
    key = make_key(tmp_path, "mv")
    sheet = new_member(hosts_env, svc, "mvcl", "c2", key, addresses["c2"])
    r = ssh_key(
        key,
        sheet.ssh_port,
        "echo kept > ~/mvcl/data.txt; echo rootfs > /tmp/../var/tmp/mark",
        host=addresses["c2"],
    )
    assert r.returncode == 0, r.stderr

    from labgpu.cli.main import run

    assert run(["member", "move", "mvcl", "--to", "c1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == "c2" and result["dest"] == "c1" and result["how"] == "cluster"
    assert result["address"] == addresses["c1"] and result["running"] is True
    where = containers_named(hosts_env.daemons, "mvcl")
    assert list(where) == ["c1"], where  # one container, on the new member

    port = result["ports"]["ssh"]
    r = ssh_key(key, port, "hostname; cat ~/mvcl/data.txt /var/tmp/mark", host=addresses["c1"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["mvcl", "kept", "rootfs"]
    # The old address no longer answers for it.
    assert ssh_key(key, sheet.ssh_port, "true", host=addresses["c2"]).returncode != 0

    inst = hosts_env.daemons["c1"].client.instances.get("mvcl")
    assert inst.devices["labgpu-ssh"]["listen"] == f"tcp:0.0.0.0:{port}"
    assert inst.devices["labgpu-home"]["source"] == sheet.home
    assert inst.config["raw.idmap"].startswith("uid 7")
    with svc.session() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).where(AuditEvent.target == "mvcl"))]
    assert actions[-3:] == ["member.move", "member.moved", "member.move.done"]
    # Reconcile agrees: nothing to repair.
    from labgpu.services.ops._reconcile import reconcile

    report = reconcile(svc)
    assert not report.repairs, report.as_dict()


def test_move_between_standalone_hosts_both_ways(
    hosts_env: HostsEnv, tmp_path: Path, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in smtp_server.settings().items():
        hosts_env.overrides[k] = v
    svc = hosts_env.services()
    addresses = add_test_hosts(hosts_env, svc)  # s2 by its unix socket: s2 -> s1 is a push, s1 -> s2 a pull
    key = make_key(tmp_path, "mv")
    sheet = new_member(hosts_env, svc, "mvsa", "s1", key, addresses["s1"], email="mvsa@lab.test", rdp=True)
    assert ssh_key(key, sheet.ssh_port, "echo one > ~/mvsa/data.txt", host=addresses["s1"]).returncode == 0

    result = move_member(svc, "mvsa", "s2")
    assert result.how == "copy (pull)" and result.address == addresses["s2"]
    assert set(result.ports) == {"ssh", "rdp"}
    assert list(containers_named(hosts_env.daemons, "mvsa")) == ["s2"]
    r = ssh_key(
        key, result.ports["ssh"], "cat ~/mvsa/data.txt; echo two >> ~/mvsa/data.txt", host=addresses["s2"]
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["one"]
    mails = smtp_server.wait_for("mvsa@lab.test")
    assert mails and f"{addresses['s2']}" in mails[-1]["Subject"]
    assert f"ssh -p {result.ports['ssh']} ubuntu@{addresses['s2']}" in mails[-1].get_content()

    back = move_member(svc, "mvsa", "s1")
    assert back.how == "copy (push)"
    assert list(containers_named(hosts_env.daemons, "mvsa")) == ["s1"]
    r = ssh_key(key, back.ports["ssh"], "cat ~/mvsa/data.txt; id -un", host=addresses["s1"])
    assert r.stdout.split() == ["one", "two", "ubuntu"], r.stderr
    host_file = Path(sheet.home) / "data.txt"
    with svc.session() as session:
        from labgpu.services.members._records import load_member

        uid = load_member(session, "mvsa").uid
    assert os.stat(host_file).st_uid == uid  # raw.idmap re-applied: the member's files are theirs

    # A move to where it is, to a drained host, or across LXD/Incus is refused before anything happens.
    r = labgpu(hosts_env, "member", "move", "mvsa", "--to", "s1")
    assert r.returncode == 2 and "on s1 already" in r.stderr


class FakeGpuClient(RuntimeClient):
    """FAKE: a real client whose host reports NVIDIA GPUs (there are none here)."""

    gpus: tuple[str, ...] = ()

    def resources(self, *, target: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        res = super().resources(target=target, timeout=timeout)
        cards = [
            {"driver": "nvidia", "pci_address": pci, "vendor": "NVIDIA", "product": "H100"}
            for pci in self.gpus
        ]
        return {**res, "gpu": {"cards": cards, "total": len(cards)}}


def test_gpu_devices_are_made_for_the_new_hosts_gpus(hosts_env: HostsEnv, tmp_path: Path) -> None:
    fake_gpus = {"s1": ("0000:41:00.0", "0000:81:00.0"), "s2": ("0000:17:00.0", "0000:65:00.0")}

    def factory(settings: Any, host: Any) -> RuntimeClient:
        client = default_client(settings, host)
        if host.name not in fake_gpus:
            return client
        fake = FakeGpuClient(client.endpoint, timeout=client.timeout, target=client.target)
        fake.gpus = fake_gpus[host.name]
        return fake

    svc = hosts_env.services(clients=HostClients(factory=factory))
    addresses = add_test_hosts(hosts_env, svc)
    key = make_key(tmp_path, "mv")
    new_member(hosts_env, svc, "mvgpu", "s1", key, addresses["s1"])
    # Assigned GPU 1, on a stopped container (it could not start with a GPU that is not there).
    set_power(svc, "mvgpu", "stop")
    changes = set_member(svc, "mvgpu", parse_set_request(gpus="1"))
    assert changes[0].applied == "at next start"
    devices = hosts_env.daemons["s1"].client.instances.get("mvgpu").devices
    assert devices["labgpu-gpu1"] == {"type": "gpu", "gputype": "physical", "pci": "0000:81:00.0"}

    result = move_member(svc, "mvgpu", "s2")
    assert result.running is False  # stopped before, stopped after
    devices = hosts_env.daemons["s2"].client.instances.get("mvgpu").devices
    assert devices["labgpu-gpu1"] == {"type": "gpu", "gputype": "physical", "pci": "0000:65:00.0"}
    assert list(containers_named(hosts_env.daemons, "mvgpu")) == ["s2"]
    # A host without GPU 1 is refused before anything moves.
    with pytest.raises(Exception, match="no GPU 1"):
        move_member(svc, "mvgpu", "c1")
    assert list(containers_named(hosts_env.daemons, "mvgpu")) == ["s2"]


@pytest.mark.parametrize(
    ("to", "kill_after", "ends_on"),
    [
        ("s2", "move-copying", "s1"),  # killed while the daemons copy: waited for, then rolled back
        ("s2", "move-copied", "s1"),  # copy made, not committed: rolled back to the source
        ("s2", "move-committed", "s2"),  # committed, source not deleted yet: finished
        ("c1", "move-copied", "c1"),  # the cluster moved it, labgpu died before the commit: finished
    ],
)
def test_killed_mid_move_then_reconcile_leaves_one_working_container(
    hosts_env: HostsEnv, tmp_path: Path, to: str, kill_after: str, ends_on: str
) -> None:
    svc = hosts_env.services()
    addresses = add_test_hosts(hosts_env, svc, s2_by_socket=False)
    source = "c2" if to == "c1" else "s1"
    key = make_key(tmp_path, "mv")
    sheet = new_member(hosts_env, svc, "mvkill", source, key, addresses[source])
    assert (
        ssh_key(key, sheet.ssh_port, "echo safe > ~/mvkill/data.txt", host=addresses[source]).returncode == 0
    )

    r = labgpu(
        hosts_env, "member", "move", "mvkill", "--to", to, extra_env={"LABGPU_FAULT_KILL_AFTER": kill_after}
    )
    assert r.returncode == -9, (r.returncode, r.stderr)

    r = labgpu(hosts_env, "reconcile", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    moves = [a for a in report["actions"] if a["action"] == "move"]
    assert len(moves) == 1 and moves[0]["done"], report

    where = containers_named(hosts_env.daemons, "mvkill")
    assert list(where) == [ends_on], where
    assert where[ends_on].status == "Running"
    info = json.loads(labgpu(hosts_env, "member", "show", "mvkill", "--json").stdout)
    assert info["host"] == ends_on and info["status"] == "Running"
    r = ssh_key(key, info["ports"]["ssh"], "cat ~/mvkill/data.txt; hostname", host=addresses[ends_on])
    assert r.stdout.split() == ["safe", "mvkill"], r.stderr
    # A second reconcile has nothing left to do about it.
    again = json.loads(labgpu(hosts_env, "reconcile", "--json").stdout)
    assert not [a for a in again["actions"] if a["member"] == "mvkill" and a["action"] != "foreign"], again
