"""Placement on real hosts: a new member's container goes where the policy says, or where the admin
says, and a member on a cluster member or another standalone host gets SSH at that host's address."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from labgpu.domain.members import parse_gpu_request
from labgpu.errors import BadInput
from labgpu.services.hosts._placement import place
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._listing import get_member, list_members
from tests.conftest import TEST_IMAGE_ALIASES
from tests.integration.multihost.conftest import HostsEnv, add_test_hosts, local_host_name
from tests.integration.sshutil import make_key, ssh_key

pytestmark = pytest.mark.integration

LABGPU = [sys.executable, "-m", "labgpu.cli"]


def labgpu(env: HostsEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LABGPU, *args], env=env.env(), capture_output=True, text=True, timeout=600)


def test_placed_by_policy_and_by_name_with_ssh_at_the_hosts_address(
    hosts_env: HostsEnv, tmp_path: Path
) -> None:
    svc = hosts_env.services()
    addresses = add_test_hosts(hosts_env, svc)
    d = hosts_env.daemons
    # Busy hosts: one foreign container on every test host but c2, so c2 has the fewest.
    for name in ("c1", "s1", "s2"):
        busy = f"busy-{secrets.token_hex(3)}"
        hosts_env.instances.append((name, busy))
        d[name].client.instances.create(
            busy,
            image=TEST_IMAGE_ALIASES["busybox"],
            profiles=["labgpu-test"],
            target=name if name == "c1" else None,
        )
    counts = {n: len([i for i in d[n].instances().values() if i.type == "container"]) for n in addresses}
    assert min(counts, key=lambda n: counts[n]) == "c2", counts

    # The choice alone, without making anything: c2, for its fewest containers.
    chosen = place(svc, gpus=parse_gpu_request("none"), template=TEST_IMAGE_ALIASES["ssh"])
    assert chosen.host.name == "c2"
    assert chosen.choice.reason.startswith("fewest containers (")
    assert f"{local_host_name(svc)} (drained)" in chosen.note

    key = make_key(tmp_path, "mh")
    r = labgpu(hosts_env, "member", "add", "mhalice", "--ssh-key", f"{key}.pub", "--json")
    assert r.returncode == 0, r.stderr
    sheet = json.loads(r.stdout)
    assert sheet["host"] == "c2"
    assert sheet["ssh"]["host"] == addresses["c2"]
    assert any(n.startswith("placed on c2: fewest containers") for n in sheet["notes"]), sheet["notes"]
    inst = d["c1"].client.instances.get("mhalice")  # any member answers for the cluster
    assert inst.location == "c2"
    port = sheet["ssh"]["port"]
    r2 = ssh_key(key, port, "hostname; echo hi > ~/mhalice/hello.txt", host=addresses["c2"])
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.split() == ["mhalice"]
    assert (Path(sheet["home"]) / "hello.txt").read_text() == "hi\n"

    # By name: s1 (standalone over HTTPS), even though it is not the policy's choice.
    request = validate_request(svc, name="mhbob", ssh_keys=[Path(f"{key}.pub").read_text()], host="s1")
    bob = add_member(svc, request)
    assert bob.host == "s1" and bob.address == addresses["s1"]
    assert any("named by the admin" in n for n in bob.notes)
    assert "mhbob" in d["s1"].instances()
    assert ssh_key(key, bob.ssh_port, "hostname", host=addresses["s1"]).stdout.strip() == "mhbob"

    # Ports are per host address: the first port of the range on two hosts at once.
    assert bob.ssh_port == port == int(hosts_env.overrides["port_range_start"])

    # Members list and show ask each member's own host.
    infos = {i.name: i for i in list_members(svc)}
    assert infos["mhalice"].host == "c2" and infos["mhalice"].status == "Running"
    assert infos["mhbob"].host == "s1" and infos["mhbob"].status == "Running"
    assert get_member(svc, "mhbob").address == addresses["s1"]

    # Never a drained host, not even by name; an unknown host or a missing GPU is bad input.
    local = local_host_name(svc)
    r = labgpu(hosts_env, "member", "add", "mhcarol", "--host", local)
    assert r.returncode == 2 and "drained" in r.stderr, r.stderr
    r = labgpu(hosts_env, "member", "add", "mhcarol", "--host", "nosuch")
    assert r.returncode == 2 and "no host named nosuch" in r.stderr
    with pytest.raises(BadInput, match="no GPU 0"):
        add_member(svc, validate_request(svc, name="mhcarol", gpus="0", host="s2"))

    # The one view: every host's containers, in one table.
    rows = json.loads(labgpu(hosts_env, "container", "list", "--json").stdout)
    where = {r["name"]: r["host"] for r in rows if r["kind"] == "member"}
    assert where == {"mhalice": "c2", "mhbob": "s1"}
