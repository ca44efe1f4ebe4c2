#!/usr/bin/env python3
"""Benchmark: one GPU inventory + attribution sweep with 200 GPU processes (target under 50 ms).

The NVML reading is the recorded 4-GPU fixture (tests/fixtures/gpu/nvml/four-gpus.json) with its
processes multiplied to N (default 200, spread over the 4 GPUs). Each process gets a /proc-style
entry (cgroup + comm) in a temporary folder, its cgroup file copied from the REAL files captured
from LXD and Incus containers and the constructed v1/v2 layouts, so the sweep runs the real
attribution code: N cgroup files read and parsed, N comm files read, owners looked up, the
resources cross-check, the inventory built and turned into JSON (what the agent serves).
NVML itself is not timed unless --nvml is given on a GPU host (then one real read is added).

    .venv/bin/python bench/gpu.py
    .venv/bin/python bench/gpu.py -n 1000 --rounds 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from labgpu.gpu.fake import RecordedNvml, load_scenario, write_proc_tree
from labgpu.gpu.inventory import take_inventory
from labgpu.gpu.nvml import GpuProcessSample, NvmlReading

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gpu"
TARGET_MS = 50.0


def cgroup_samples() -> list[tuple[str, tuple[str, str] | None]]:
    """(cgroup text, (project, container) or None) for every captured and constructed file."""
    out = []
    for kind in ("captured", "constructed"):
        manifest = json.loads((FIXTURES / "cgroup" / kind / "manifest.json").read_text())
        for f in manifest["files"]:
            key = (f["project"] or "default", f["container"]) if f["kind"] == "container" else None
            out.append(((FIXTURES / "cgroup" / kind / f["file"]).read_text(), key))
    return out


def build(n: int, root: Path) -> tuple[RecordedNvml, dict[tuple[str, str], str], dict]:
    source, _ = load_scenario(FIXTURES / "nvml" / "four-gpus.json")
    base = source.read()
    samples = cgroup_samples()
    owners: dict[tuple[str, str], str] = {}
    procs: dict[int, tuple[str, str]] = {}
    per_gpu: list[list[GpuProcessSample]] = [[] for _ in base.gpus]
    for i in range(n):
        pid = 100_000 + i
        text, key = samples[i % len(samples)]
        if key is not None:
            owners.setdefault(key, f"member{len(owners)}")
        procs[pid] = (text, "python3")
        per_gpu[i % len(base.gpus)].append(GpuProcessSample(pid=pid, used_memory=(i % 8 + 1) * 2**28))
    write_proc_tree(root, procs)
    gpus = tuple(replace(g, processes=tuple(p)) for g, p in zip(base.gpus, per_gpu, strict=True))
    resources = json.loads((FIXTURES / "runtime" / "resources-four-gpus.json").read_text())
    return RecordedNvml(NvmlReading(base.driver_version, base.cuda_version, gpus)), owners, resources


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="GPU processes (default 200)")
    ap.add_argument("--rounds", type=int, default=30, help="timed sweeps (default 30)")
    ap.add_argument("--nvml", action="store_true", help="also time one real NVML read (GPU hosts)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="labgpu-bench-proc-") as tmp:
        source, owners, resources = build(args.n, Path(tmp))

        def sweep() -> int:
            inv = take_inventory(source, owners=owners, resources=resources, proc_root=tmp)
            json.dumps(inv.to_json())
            return sum(len(g.processes) for g in inv.gpus)

        t0 = time.perf_counter()
        found = sweep()  # the first sweep also pays for imports' lazy work and cold dentries
        first = (time.perf_counter() - t0) * 1000
        times = []
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            sweep()
            times.append((time.perf_counter() - t0) * 1000)
        inv = take_inventory(source, owners=owners, resources=resources, proc_root=tmp)
        attributed = sum(1 for g in inv.gpus for p in g.processes if p.member)

    median, worst = statistics.median(times), max(times)
    print(
        f"inventory + attribution sweep, {found} processes on {len(inv.gpus)} GPUs "
        f"({attributed} attributed to members): median {median:.1f} ms, worst {worst:.1f} ms, "
        f"first {first:.1f} ms over {args.rounds} rounds (target < {TARGET_MS:.0f} ms)"
    )
    if args.nvml:
        from labgpu.gpu.nvml import NvmlSource, NvmlUnavailable

        try:
            t0 = time.perf_counter()
            reading = NvmlSource().read()
            print(
                f"real NVML read: {(time.perf_counter() - t0) * 1000:.1f} ms for {len(reading.gpus)} GPU(s)"
            )
        except NvmlUnavailable as exc:
            print(f"real NVML read: not possible here ({exc.message})")
    return 0 if median < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
