#!/usr/bin/env python3
"""Benchmark: list N instances through labgpu's runtime vs `lxc list --format json`.

Creates N small stopped containers (busybox test image) in the same run, times
both ways of listing them (median of R rounds), prints the ratio and how many
HTTP requests labgpu made per listing (it must be 1 per host), then deletes
what it created.

    .venv/bin/python bench/list_instances.py --daemon lxd -n 50
    .venv/bin/python bench/list_instances.py --daemon incus -n 50 --running 5
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.system import base_image

SOCKETS = {"lxd": "/var/lib/lxd/unix.socket", "incus": "/var/lib/incus/unix.socket"}
CLI = {"lxd": ["lxc", "list", "--format", "json"], "incus": ["incus", "list", "--format", "json"]}
ALIAS = "labgpu-test-busybox"


def ensure_image(client: RuntimeClient) -> None:
    built = base_image.build_image(base_image.busybox_recipe())
    current = client.images.get_by_alias(ALIAS)
    if current is None or current.properties.get("labgpu.recipe") != built.recipe_hash:
        client.images.import_tarballs(
            built.meta, built.rootfs, aliases=[ALIAS], properties={"labgpu.recipe": built.recipe_hash}
        )


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemon", choices=sorted(SOCKETS), default="lxd")
    ap.add_argument("-n", type=int, default=50, help="instances to create (default 50)")
    ap.add_argument("--running", type=int, default=0, help="how many of them to start")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    client = RuntimeClient(Endpoint.unix(Path(SOCKETS[args.daemon])))
    ensure_image(client)
    prefix = f"bench-{secrets.token_hex(3)}"
    names = [f"{prefix}-{i}" for i in range(args.n)]

    def create(name: str) -> None:
        client.instances.create(name, image=ALIAS, config={"user.labgpu.owner": "bench"})

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create, names))
            list(pool.map(client.instances.start, names[: args.running]))
        total = len(client.instances.all())

        requests = []

        def via_labgpu() -> None:
            before = client.request_count
            client.instances.all()
            requests.append(client.request_count - before)

        def via_cli() -> None:
            out = subprocess.run(CLI[args.daemon], check=True, capture_output=True).stdout
            json.loads(out)

        via_labgpu()
        via_cli()  # warm both
        t_labgpu = statistics.median(timed(via_labgpu, args.rounds))
        t_cli = statistics.median(timed(via_cli, args.rounds))
        result = {
            "daemon": args.daemon,
            "instances": total,
            "running": args.running,
            "labgpu_s": round(t_labgpu, 4),
            "cli_s": round(t_cli, 4),
            "ratio_labgpu_over_cli": round(t_labgpu / t_cli, 3),
            "http_requests_per_listing": max(requests),
        }
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{args.daemon}: {total} instances ({args.running} running), median of {args.rounds}")
            print(
                f"  labgpu runtime.instances.all(): {t_labgpu * 1000:8.1f} ms  ({max(requests)} HTTP request)"
            )
            print(f"  {' '.join(CLI[args.daemon])}: {t_cli * 1000:8.1f} ms")
            print(f"  ratio labgpu / cli: {t_labgpu / t_cli:.3f}")
        return 0 if max(requests) == 1 else 1
    finally:

        def rm(name: str) -> None:
            with contextlib.suppress(Exception):
                client.instances.stop(name, force=True)
            client.instances.delete(name)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(rm, names))


if __name__ == "__main__":
    sys.exit(main())
