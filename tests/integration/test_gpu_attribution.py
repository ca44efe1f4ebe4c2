"""Attribution against REAL LXD and Incus: processes of a running busybox container are mapped
to that container by their host PID, host processes to the host, and the whole inventory sweep
finds the container's member through the real instance listing. NVML is the only fake here
(no GPU on these machines): a recorded reading whose GPU processes are the real PIDs."""

from __future__ import annotations

import os
import time
from pathlib import Path

from labgpu.gpu.attribution import OwnerKind, container_of_pid
from labgpu.gpu.fake import RecordedNvml
from labgpu.gpu.inventory import take_inventory
from labgpu.gpu.nvml import GpuProcessSample, GpuSample, NvmlReading
from labgpu.gpu.runtime_view import RuntimeView
from labgpu.runtime.client import RuntimeClient
from tests.conftest import Cleanup, unique_name


def _children(pid: int) -> list[int]:
    """Host pids whose parent is ``pid`` (from /proc/PID/stat, independent of cgroups)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append(int(entry.name))
    return found


def _monitor_of(name: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if cmdline.startswith("[lxc monitor]") and cmdline.endswith(f" {name}"):
            return int(entry.name)
    return None


def test_real_container_processes_map_to_their_container(
    runtime: RuntimeClient, cleanup: Cleanup, busybox_image: str
) -> None:
    name = cleanup.instance(unique_name("gpu"))
    runtime.instances.create(name, image=busybox_image, config={"user.labgpu.owner": "alice"}, start=True)
    init = runtime.instances.state(name).pid
    assert init > 0

    owner = container_of_pid(init, proc_root="/proc")
    assert (owner.kind, owner.container, owner.project) == (OwnerKind.CONTAINER, name, None)
    assert owner.cgroup.startswith(f"/lxc.payload.{name}")

    # A process started inside (the way a member starts a training job) is re-parented to the
    # container's init once its shell exits; it maps to the container too.
    result = runtime.instances.exec(name, ["sh", "-c", "sleep 120 </dev/null >/dev/null 2>&1 &"])
    assert result.ok
    deadline = time.monotonic() + 10
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        children = _children(init)
        time.sleep(0.1)
    assert children, "the background sleep did not show up under the container's init"
    for child in children:
        assert container_of_pid(child).container == name

    me = container_of_pid(os.getpid())
    assert me.kind is OwnerKind.HOST and me.label == "host"

    monitor = _monitor_of(name)
    assert monitor is not None
    assert (container_of_pid(monitor).kind, container_of_pid(monitor).container) == (OwnerKind.MONITOR, name)

    # The whole sweep: NVML recorded, everything else real (proc, instance listing, resources API).
    gpu = GpuSample(
        index=0,
        uuid="GPU-00000000-0000-4000-8000-000000000000",
        pci_bus_id="00000000:3B:00.0",
        name="recorded GPU",
        memory_total=2**34,
        processes=(
            GpuProcessSample(init, 2**30),
            GpuProcessSample(children[0], 2**29),
            GpuProcessSample(os.getpid(), 1),
        ),
    )
    view = RuntimeView(lambda: runtime, project="default")
    facts = view.facts()
    assert facts.error == "" and facts.owners[("default", name)] == "alice"
    inv = take_inventory(
        RecordedNvml(NvmlReading("550.54.15", "12.4", (gpu,))), owners=facts.owners, resources=facts.resources
    )
    rows = {p.pid: p for p in inv.gpus[0].processes}
    assert rows[init].member == "alice" and rows[init].command == "init"
    assert rows[children[0]].member == "alice" and rows[children[0]].command == "sleep"
    assert rows[os.getpid()].owner.kind is OwnerKind.HOST and rows[os.getpid()].member is None
    # This host has no GPU, so the resources API disagrees with the recorded reading, and says so.
    assert any("resources API does not" in w for w in inv.warnings)
