#!/usr/bin/env python3
"""Benchmark: `member add` to done versus the seeds' manual way, same image, same pool, same run.

Three ways to give someone a container they can SSH into with their key, each from the same
local image on the same storage pool:

- labgpu:      the `member add` service with a public key: home folder, uid and port in the store, ONE
               create request (raw.idmap, home disk, SSH proxy, limits), the key and sudo rule written
               before the first start, start, wait for the SSH banner through the proxy. Timed to
               SSH-ready (the banner answers) and to done (everything in place; the command returns).
               With --no-key the member gets the initial password instead (set after sshd answers).
- manual:      `lxc launch IMAGE NAME -s POOL`, `lxc config device add NAME ssh proxy
               listen=tcp:127.0.0.1:PORT connect=tcp:127.0.0.1:22`, `lxc file push -p` of the key to
               ~ubuntu/.ssh/authorized_keys, wait for the banner (done). No home folder, no uid mapping, no
               store: less work than labgpu does.
- manual+home: what the seeds do for a member (seed 001): launch, `lxc config device add NAME home disk
               source=DIR path=/home/ubuntu/NAME`, raw.idmap with `lxc config set`, a restart (the uid
               map only applies at a start; `--force` here, the seeds' clean restart is slower), the proxy,
               the key, wait for the banner.

Each way runs ROUNDS times, one container at a time (order rotated each round),
then N at once (threads). Medians are printed with the ratios labgpu/manual;
the per-step times of labgpu show where its time goes. Everything made is
deleted at the end (containers, home folders, the bench profile, the store).

    .venv/bin/python bench/provision.py --daemon lxd
    .venv/bin/python bench/provision.py --daemon incus --rounds 5 -n 4 --json
    .venv/bin/python bench/provision.py --daemon lxd --temp-pool btrfs   # copy-on-write clones
    .venv/bin/python bench/provision.py --daemon lxd --temp-pool dir     # every container unpacks the image
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.context import Actor, Services
from labgpu.services.members import _add, _provision
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._provision import PROVISION_STEPS
from labgpu.services.members._ssh import wait_for_ssh
from labgpu.settings import load_settings
from labgpu.store.db import create_engine_for, session_factory
from labgpu.store.migrate import upgrade
from labgpu.system import base_image

SOCKETS = {"lxd": "/var/lib/lxd/unix.socket", "incus": "/var/lib/incus/unix.socket"}
CLIS = {"lxd": "lxc", "incus": "incus"}
SSH_ALIAS = "labgpu-test-ssh"
# Above the kernel's ephemeral range and the tests' port ranges (30000-59999).
PORT_BASE = 61000
# A host uid inside labgpu's member range (uid_base 70000, count 10000), delegated in /etc/subuid.
MANUAL_UID_BASE = 79000


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cli = CLIS[args.daemon]
        self.client = RuntimeClient(
            Endpoint.unix(Path(SOCKETS[args.daemon])), timeout=60, operation_timeout=600
        )
        self.tag = secrets.token_hex(3)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"labgpu-bench-{self.tag}-"))
        self.profile = f"labgpu-bench-{self.tag}"
        if args.temp_pool:
            args.pool = f"labgpu-bench-{self.tag}"
        base = PORT_BASE + secrets.randbelow(40) * 100
        self.manual_ports = iter(range(base + 50, base + 100))
        self.manual_uids = iter(range(MANUAL_UID_BASE, MANUAL_UID_BASE + 50))
        self.made: list[str] = []
        self.key = self.tmp / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        self.public_key = self.key.with_suffix(".pub").read_text()
        self.lock = threading.Lock()
        self.marks = threading.local()
        self.serial = 0
        settings = load_settings(
            state_dir=self.tmp / "state",
            home_base=self.tmp / "home",
            home_archive=self.tmp / "archive",
            runtime_url=f"unix://{SOCKETS[args.daemon]}",
            listen_address="127.0.0.1",
            port_range_start=base,
            port_range_end=base + 49,
            default_template=args.image,
            profile_name=self.profile,
            storage_pool=args.pool,
            default_gpus="none",
        )
        engine = create_engine_for(settings)
        upgrade(settings, engine=engine)
        self.svc = Services(
            settings=settings, runtime=self.client, sessions=session_factory(engine), actor=Actor("bench")
        )

    # Set-up and clean-up ------------------------------------------------------------------------

    def setup(self) -> None:
        if self.args.temp_pool:
            driver = self.args.temp_pool
            self.client.storage_pools.create(
                self.args.pool,
                driver=driver,
                config={} if driver == "dir" else {"size": "8GiB"},
                description="labgpu bench (deleted at the end)",
            )
        if self.args.image == SSH_ALIAS:
            built = base_image.build_image(
                base_image.debootstrap_recipe(), cache_dir=base_image.resolve_cache_dir()
            )
            current = self.client.images.get_by_alias(SSH_ALIAS)
            if current is None or current.properties.get("labgpu.recipe") != built.recipe_hash:
                self.client.images.import_tarballs(
                    built.meta,
                    built.rootfs,
                    aliases=[SSH_ALIAS],
                    properties={"labgpu.recipe": built.recipe_hash},
                )
        # What `host init` would make: the root disk on the pool, autostart. The manual way gets the
        # same root disk from the default profile and `-s POOL`.
        self.client.profiles.create(
            self.profile,
            config={"boot.autostart": "true"},
            devices={"root": {"type": "disk", "path": "/", "pool": self.args.pool}},
            description="labgpu bench (deleted at the end)",
        )

    def remove(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self.client.instances.stop(name, force=True)
        with contextlib.suppress(Exception):
            self.client.instances.delete(name)

    def cleanup(self) -> None:
        with self.lock:
            names, self.made = list(self.made), []
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self.remove, names))
        with contextlib.suppress(Exception):
            self.client.profiles.delete(self.profile)
        if self.args.temp_pool:
            self.delete_pool(self.args.pool)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def delete_pool(self, pool: str) -> None:
        """Delete the bench's own pool, with the image copies the daemon cached in it."""
        path = f"/1.0/storage-pools/{pool}/volumes"
        with contextlib.suppress(Exception):
            for vol in self.client.get(path, what="list volumes", params={"recursion": 1}) or []:
                if vol.get("type") == "image":
                    self.client.call("DELETE", f"{path}/image/{vol['name']}", what="delete image volume")
        with contextlib.suppress(Exception):
            self.client.storage_pools.delete(pool)

    def name(self, kind: str) -> str:
        with self.lock:
            self.serial += 1
            name = f"b{kind}-{self.tag}-{self.serial}"
            self.made.append(name)
        return name

    # The three ways -----------------------------------------------------------------------------

    def labgpu(self) -> dict[str, float]:
        """One `member add`; returns seconds to SSH-ready, to done, and per step."""
        name = self.name("l")
        self.marks.steps, self.marks.took, self.marks.current = {}, {}, None
        t0 = time.perf_counter()
        keys = [] if self.args.no_key else [self.public_key]
        request = validate_request(self.svc, name=name, gpus="none", ssh_keys=keys)
        add_member(self.svc, request, report=self.report)
        done = time.perf_counter() - t0
        self.report("")  # ends the last step
        steps = {step: at - t0 for step, at in self.marks.steps.items()}
        return {
            "ssh_ready": steps["ssh"],
            "done": done,
            **{f"step:{k}": v for k, v in steps.items()},
            **{f"took:{k}": v for k, v in self.marks.took.items() if k},
        }

    def manual(self, *, home: bool) -> dict[str, float]:
        name = self.name("h" if home else "m")
        port = next(self.manual_ports)
        t0 = time.perf_counter()
        self.run(self.cli, "launch", self.args.image, name, "-s", self.args.pool)
        if home:
            uid = next(self.manual_uids)
            folder = self.tmp / "manual-home" / name
            folder.mkdir(parents=True)
            os.chown(folder, uid, uid)
            self.run(self.cli, "config", "device", "add", name, "home", "disk", f"source={folder}",
                     f"path=/home/ubuntu/{name}")  # fmt: skip
            self.run(self.cli, "config", "set", name, "raw.idmap", f"uid {uid} 1000\ngid {uid} 1000")
            # --force: a container restarted while it still boots may ignore the clean shutdown
            # request and hang; the seeds restart gracefully, which can only be slower.
            self.run(self.cli, "restart", "--force", name)
        self.run(self.cli, "config", "device", "add", name, "ssh", "proxy",
                 f"listen=tcp:127.0.0.1:{port}", "connect=tcp:127.0.0.1:22")  # fmt: skip
        self.run(self.cli, "file", "push", "-p", "--uid", "1000", "--gid", "1000", "--mode", "0600",
                 str(self.key.with_suffix(".pub")), f"{name}/home/ubuntu/.ssh/authorized_keys")  # fmt: skip
        wait_for_ssh("127.0.0.1", port, timeout=300)
        took = time.perf_counter() - t0
        return {"ssh_ready": took, "done": took}

    @staticmethod
    def run(*argv: str) -> None:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")

    def checkpoint(self, step: str) -> None:
        steps = getattr(self.marks, "steps", None)
        if steps is not None:
            steps[step] = time.perf_counter()

    def report(self, step: str) -> None:
        """The service's step reporter: seconds spent in each step, as `member add` shows them."""
        now = time.perf_counter()
        current = getattr(self.marks, "current", None)
        if current is not None:
            took = self.marks.took
            took[current[0]] = took.get(current[0], 0.0) + now - current[1]
        self.marks.current = (step, now)

    # Rounds -------------------------------------------------------------------------------------

    def ways(self) -> dict[str, Callable[[], dict[str, float]]]:
        return {
            "labgpu": self.labgpu,
            "manual": lambda: self.manual(home=False),
            "manual+home": lambda: self.manual(home=True),
        }

    def sequential(self) -> dict[str, list[dict[str, float]]]:
        ways = self.ways()
        order = list(ways)
        results: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
        for r in range(self.args.warmup + self.args.rounds):
            for way in order:
                result = ways[way]()
                if r >= self.args.warmup:
                    results[way].append(result)
                self.cleanup_made()
            order = order[1:] + order[:1]
        return results

    def parallel(self) -> dict[str, dict[str, float]]:
        """N of each way at once, PARALLEL_ROUNDS times (order rotated); medians of the rounds."""
        ways = self.ways()
        order = list(ways)
        rounds: dict[str, list[dict[str, float]]] = {w: [] for w in ways}
        for _ in range(self.args.parallel_rounds):
            for way in order:
                t0 = time.perf_counter()
                with ThreadPoolExecutor(self.args.n) as pool:
                    futures = [pool.submit(ways[way]) for _ in range(self.args.n)]
                    results = [f.result() for f in futures]
                round_ = {
                    "all_ssh_ready": max(r["ssh_ready"] for r in results),
                    "all_done": max(r["done"] for r in results),
                    "wall": time.perf_counter() - t0,
                }
                if way == "labgpu":
                    for key in results[0]:
                        if key.startswith(("step:", "took:")):
                            round_[key] = statistics.mean(r[key] for r in results if key in r)
                rounds[way].append(round_)
                self.cleanup_made()
            order = order[1:] + order[:1]
        return {way: {k: median_of(rs, k) for k in rs[0]} for way, rs in rounds.items()}

    def cleanup_made(self) -> None:
        with self.lock:
            names, self.made = list(self.made), []
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(self.remove, names))


def median_of(results: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in results if key in r)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--daemon", choices=sorted(SOCKETS), default="lxd")
    ap.add_argument(
        "--image", default=SSH_ALIAS, help=f"image alias with sshd (default: {SSH_ALIAS}, built offline)"
    )
    ap.add_argument("--pool", default="default", help="storage pool for every way (default: default)")
    ap.add_argument(
        "--temp-pool",
        metavar="DRIVER",
        choices=["btrfs", "zfs", "lvm", "dir"],
        help="make a pool with this driver for the run (instead of --pool), deleted at the end",
    )
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds, one container at a time (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument(
        "-n", type=int, default=4, help="containers at once in the parallel part (default 4; 0: skip)"
    )
    ap.add_argument("--parallel-rounds", type=int, default=2, help="rounds of the parallel part (default 2)")
    ap.add_argument(
        "--no-key", action="store_true", help="labgpu's members get no key (the initial password path)"
    )
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    bench = Bench(args)
    # Per-step times, no fault injection: every module that calls checkpoint() gets the bench's.
    _add.checkpoint = _provision.checkpoint = bench.checkpoint  # type: ignore[assignment]
    load_before = os.getloadavg()
    try:
        bench.setup()
        seq = bench.sequential()
        par = bench.parallel() if args.n > 0 else {}
    finally:
        bench.cleanup()
    result = summary(bench, args, seq, par, load_before)
    if args.json:
        print(json.dumps(result))
    else:
        print_summary(result, args)
    return 0


def took_medians(results: list[dict[str, float]]) -> dict[str, float]:
    keys = dict.fromkeys(k for r in results for k in r if k.startswith("took:"))
    return {k.removeprefix("took:"): round(median_of(results, k), 3) for k in keys}


def summary(
    bench: Bench,
    args: argparse.Namespace,
    seq: dict[str, list[dict[str, float]]],
    par: dict[str, dict[str, float]],
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    lab, man, home = seq["labgpu"], seq["manual"], seq["manual+home"]
    t_lab, t_man = (median_of(x, "ssh_ready") for x in (lab, man))
    d_lab, d_man, d_home = (median_of(x, "done") for x in (lab, man, home))
    steps = [s for s in PROVISION_STEPS if s != "desired-state"]
    server = bench.client.server()
    result: dict[str, Any] = {
        "daemon": args.daemon,
        "server": f"{server.label} {server.version}",
        "image": args.image,
        "pool": args.pool,
        "pool_driver": args.temp_pool or pool_driver(bench, args.pool),
        "labgpu_key": not args.no_key,
        "rounds": args.rounds,
        "sequential_median_s": {
            "labgpu_ssh_ready": round(t_lab, 3),
            "labgpu_done": round(d_lab, 3),
            "manual_done": round(d_man, 3),
            "manual_home_done": round(d_home, 3),
        },
        "ratio_done_labgpu_over_manual": round(d_lab / d_man, 3),
        "ratio_ssh_ready_labgpu_over_manual": round(t_lab / t_man, 3),
        "ratio_done_labgpu_over_manual_home": round(d_lab / d_home, 3),
        # Every timed round, to judge the spread on a busy machine.
        "samples_done_s": {way: [round(r["done"], 3) for r in rs] for way, rs in seq.items()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        # Seconds from the start of `member add` to the end of each step (median).
        "labgpu_steps_s": {s: round(median_of(lab, f"step:{s}"), 3) for s in ["desired-state", *steps]},
        # Seconds spent in each step as `member add` reports them (median).
        "labgpu_step_took_s": took_medians(lab),
    }
    if par:
        result["parallel"] = {
            "n": args.n,
            "rounds": args.parallel_rounds,
            **{
                way: {k: round(v, 3) for k, v in r.items() if not k.startswith(("step:", "took:"))}
                for way, r in par.items()
            },
            # labgpu: mean over the N members of the seconds spent in each step (median of rounds)
            "labgpu_step_took_s": {
                k.removeprefix("took:"): round(v, 3)
                for k, v in par["labgpu"].items()
                if k.startswith("took:")
            },
            "ratio_done_labgpu_over_manual": round(par["labgpu"]["all_done"] / par["manual"]["all_done"], 3),
            "ratio_ssh_ready_labgpu_over_manual": round(
                par["labgpu"]["all_ssh_ready"] / par["manual"]["all_ssh_ready"], 3
            ),
            "ratio_done_labgpu_over_manual_home": round(
                par["labgpu"]["all_done"] / par["manual+home"]["all_done"], 3
            ),
        }
    return result


def pool_driver(bench: Bench, pool: str) -> str:
    with contextlib.suppress(Exception):
        found = bench.client.storage_pools.find(pool)
        if found is not None:
            return str(found.driver)
    return "?"


def print_summary(result: dict[str, Any], args: argparse.Namespace) -> None:
    seqm = result["sequential_median_s"]
    key = "with a key" if result["labgpu_key"] else "without a key (initial password)"
    print(
        f"{result['server']}, image {args.image}, pool {args.pool} ({result['pool_driver']}): "
        f"median of {args.rounds} rounds"
    )
    print(
        f"  labgpu member add ({key}): SSH-ready {seqm['labgpu_ssh_ready']:.2f} s, done {seqm['labgpu_done']:.2f} s"
    )
    print(f"  manual (launch, proxy, key push, banner):   done {seqm['manual_done']:.2f} s")
    print(f"  manual+home (+ home disk, raw.idmap, restart): done {seqm['manual_home_done']:.2f} s")
    print(
        f"  ratio done labgpu/manual: {result['ratio_done_labgpu_over_manual']:.3f}   "
        f"labgpu/manual+home: {result['ratio_done_labgpu_over_manual_home']:.3f}"
    )
    print(
        "  labgpu, seconds in each step: "
        + ", ".join(f"{k} {v:.2f}" for k, v in result["labgpu_step_took_s"].items())
    )
    print(
        "  samples (done): "
        + "; ".join(f"{w} " + " ".join(f"{x:.1f}" for x in v) for w, v in result["samples_done_s"].items())
    )
    print(
        f"  load average before {' '.join(map(str, result['load_average_before']))}, "
        f"after {' '.join(map(str, result['load_average_after']))} on {result['cpus']} CPUs"
    )
    if "parallel" in result:
        p = result["parallel"]
        print(f"{p['n']} at once, until all are done (median of {p['rounds']} rounds):")
        for way in ("labgpu", "manual", "manual+home"):
            print(f"  {way:12s} SSH-ready {p[way]['all_ssh_ready']:6.2f} s, done {p[way]['all_done']:6.2f} s")
        print(
            f"  ratio done labgpu/manual: {p['ratio_done_labgpu_over_manual']:.3f}   "
            f"labgpu/manual+home: {p['ratio_done_labgpu_over_manual_home']:.3f}"
        )
        print(
            "  labgpu, seconds in each step (mean): "
            + ", ".join(f"{k} {v:.2f}" for k, v in p["labgpu_step_took_s"].items())
        )


if __name__ == "__main__":
    sys.exit(main())
