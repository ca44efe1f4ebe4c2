"""One inventory sweep over recorded NVML data and a /proc tree made of REAL captured cgroup files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from labgpu.gpu.attribution import OwnerKind
from labgpu.gpu.fake import RecordedNvml, load_scenario, write_proc_tree
from labgpu.gpu.inventory import Inventory, cross_check, owners_from_instances, take_inventory

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
RESOURCES = json.loads((FIXTURES / "runtime" / "resources-four-gpus.json").read_text())


def names_in(cgroup_file: str) -> str:
    """The container name a captured file carries (as the manifest records it)."""
    manifest = json.loads((FIXTURES / "cgroup" / "captured" / "manifest.json").read_text())
    return next(f["container"] for f in manifest["files"] if f"cgroup/captured/{f['file']}" == cgroup_file)


@pytest.fixture
def four_gpus(tmp_path: Path) -> tuple[Inventory, dict[str, str]]:
    source, procs = load_scenario(FIXTURES / "nvml" / "four-gpus.json")
    write_proc_tree(tmp_path, procs)
    scenario = json.loads((FIXTURES / "nvml" / "four-gpus.json").read_text())["proc"]
    alice = names_in(scenario["41001"]["cgroup"])  # LXD, systemd container
    bob = names_in(scenario["41002"]["cgroup"])  # Incus, busybox container
    carol = names_in(scenario["41003"]["cgroup"])  # LXD, busybox container
    pj_file = scenario["41006"]["cgroup"]
    dave = names_in(pj_file)
    manifest = json.loads((FIXTURES / "cgroup" / "captured" / "manifest.json").read_text())
    project = next(f["project"] for f in manifest["files"] if f"cgroup/captured/{f['file']}" == pj_file)
    owners = {
        ("default", alice): "alice",
        ("default", bob): "bob",
        ("default", carol): "carol",
        (project, dave): "dave",
    }
    inv = take_inventory(source, owners=owners, resources=RESOURCES, proc_root=tmp_path)
    return inv, {"alice": alice, "bob": bob, "carol": carol, "dave": dave}


def test_every_process_gets_its_container_and_member(four_gpus: tuple[Inventory, dict[str, str]]) -> None:
    inv, names = four_gpus
    assert inv.available and inv.driver_version == "550.54.15" and inv.warnings == ()
    rows = {p.pid: p for g in inv.gpus for p in g.processes}
    assert (rows[41001].member, rows[41001].owner.container, rows[41001].command) == (
        "alice",
        names["alice"],
        "python3",
    )
    assert (rows[41002].member, rows[41002].owner.container) == ("bob", names["bob"])
    assert rows[41003].member == "carol"
    assert rows[41004].owner.kind is OwnerKind.HOST and rows[41004].member is None
    assert rows[41005].owner.kind is OwnerKind.UNKNOWN and rows[41005].used_memory is None
    assert rows[41006].member == "dave" and rows[41006].owner.project


def test_json_shape(four_gpus: tuple[Inventory, dict[str, str]]) -> None:
    inv, _ = four_gpus
    data = inv.to_json()
    json.dumps(data)
    gpu0 = data["gpus"][0]
    assert {
        "index",
        "uuid",
        "pci_address",
        "name",
        "memory_total",
        "memory_used",
        "utilization",
        "processes",
    } <= set(gpu0)
    assert gpu0["pci_address"] == "0000:1b:00.0"
    proc = gpu0["processes"][0]
    assert {"pid", "command", "member", "container", "where", "used_memory"} <= set(proc)
    assert data["available"] is True and data["reason"] is None


def test_member_usage_adds_up_per_gpu_and_container(four_gpus: tuple[Inventory, dict[str, str]]) -> None:
    inv, _ = four_gpus
    rows = {(r.gpu.index, r.where, r.member): r for r in inv.member_usage()}
    assert rows[(0, OwnerKind.CONTAINER, "alice")].used_memory == 30500 * 2**20
    assert rows[(1, OwnerKind.HOST, "")].container == "" and rows[(1, OwnerKind.HOST, "")].processes == 1
    assert rows[(3, OwnerKind.UNKNOWN, "")].used_memory == 0


def test_members_unknown_without_owner_map(tmp_path: Path) -> None:
    source, procs = load_scenario(FIXTURES / "nvml" / "four-gpus.json")
    write_proc_tree(tmp_path, procs)
    inv = take_inventory(source, proc_root=tmp_path, notes=["members unknown: daemon down"])
    p = inv.gpus[0].processes[0]
    assert p.member is None and p.owner.in_container
    assert inv.warnings == ("members unknown: daemon down",)


def test_cross_check_with_the_resources_api() -> None:
    source, _ = load_scenario(FIXTURES / "nvml" / "four-gpus.json")
    gpus = source.read().gpus
    assert cross_check(gpus, RESOURCES) == []
    fewer = copy.deepcopy(RESOURCES)
    fewer["gpu"]["cards"] = [c for c in fewer["gpu"]["cards"] if c["pci_address"] != "0000:88:00.0"]
    (only,) = cross_check(gpus, fewer)
    assert "0000:88:00.0" in only and "resources API does not" in only
    (fell,) = cross_check(gpus[:3], RESOURCES)
    assert "0000:b1:00.0" in fell and "fallen off the bus" in fell


def test_mig_and_a_lost_gpu(tmp_path: Path) -> None:
    source, procs = load_scenario(FIXTURES / "nvml" / "mig-and-lost.json")
    write_proc_tree(tmp_path, procs)
    inv = take_inventory(source, proc_root=tmp_path)
    mig, lost = inv.gpus
    assert mig.gpu.mig_enabled and mig.gpu.utilization is None
    assert [p.owner.label for p in mig.processes] == ["alice", "host"]
    assert lost.gpu.error and any("lost" in w for w in inv.warnings)


def test_no_gpu_on_this_host_is_not_an_error() -> None:
    inv = take_inventory(RecordedNvml(unavailable="NVML library libnvidia-ml.so.1 not found", hint="install"))
    assert not inv.available and inv.gpus == ()
    assert inv.headline == "no NVIDIA GPU on this host (NVML library libnvidia-ml.so.1 not found)"
    assert inv.to_json()["reason"] == inv.headline


def test_gpus_on_the_bus_but_no_driver_says_how_to_fix() -> None:
    source = RecordedNvml(unavailable="the NVIDIA kernel driver is not loaded", hint="modprobe nvidia")
    inv = take_inventory(source, resources=RESOURCES)
    assert inv.headline.startswith("4 NVIDIA GPU(s) on the PCI bus but NVML cannot be used")
    assert "modprobe nvidia" in inv.headline
    assert take_inventory(source, gpus_on_bus=2).headline.startswith("2 NVIDIA GPU(s)")


def test_owner_map_from_one_instance_listing() -> None:
    def inst(name: str, owner: str | None) -> SimpleNamespace:
        return SimpleNamespace(name=name, label=lambda key: owner if key == "owner" else None)

    owners = owners_from_instances([inst("alice", "alice"), inst("other", None)], project="lab")
    assert owners == {("lab", "alice"): "alice"}
