"""Placement rules (pure)."""

from __future__ import annotations

import pytest

from labgpu.domain.members import parse_gpu_request
from labgpu.domain.placement import (
    Candidate,
    Demand,
    choose_host,
    committed,
    cpu_limit_threads,
    memory_limit_bytes,
)
from labgpu.errors import BadInput, Conflict, Exhausted

GiB = 1024**3
NONE = Demand(gpus=parse_gpu_request("none"))


def host(name: str, **kw: object) -> Candidate:
    base: dict[str, object] = {"cpu_threads": 32, "memory_total": 128 * GiB}
    base.update(kw)
    return Candidate(name=name, **base)  # type: ignore[arg-type]


def test_fewest_containers_wins_and_says_so() -> None:
    choice = choose_host([host("a", containers=3), host("b", containers=1), host("c", containers=2)], NONE)
    assert choice.host == "b"
    assert choice.reason == "fewest containers (1; c has 2)"


def test_drained_and_unreachable_never_chosen_and_listed() -> None:
    choice = choose_host(
        [
            host("a", drained=True),
            host("b", reachable=False, error="no answer within 5s"),
            host("c", containers=9),
        ],
        NONE,
    )
    assert choice.host == "c"
    assert choice.reason == "the only host that can take it"
    assert choice.summary == (
        "placed on c: the only host that can take it; not eligible: a (drained), "
        "b (unreachable: no answer within 5s)"
    )


def test_gpus_all_prefers_the_most_free_gpus() -> None:
    gpus4 = {i: f"0000:{i:02x}:00.0" for i in range(4)}
    demand = Demand(gpus=parse_gpu_request("all"))
    choice = choose_host([host("cpu-only", containers=0), host("gpu", gpus=gpus4, containers=5)], demand)
    assert choice.host == "gpu"
    assert choice.reason == "most free GPUs (4; cpu-only has 0)"
    # Assigned GPUs are not free.
    busy = host("gpu", gpus=gpus4, gpu_mode="assigned", gpus_assigned=frozenset({0, 1, 2}))
    other = host("gpu2", gpus={0: "x", 1: "y"}, gpu_mode="assigned")
    assert choose_host([busy, other], demand).host == "gpu2"


def test_gpu_indexes_must_exist_and_be_free() -> None:
    demand = Demand(gpus=parse_gpu_request("1"))
    a = host("a", gpus={0: "p0"})
    b = host("b", gpus={0: "p0", 1: "p1"}, gpu_mode="assigned", gpus_assigned=frozenset({1}))
    c = host("c", gpus={0: "p0", 1: "p1"}, containers=7)
    choice = choose_host([a, b, c], demand)
    assert choice.host == "c"
    assert dict(choice.skipped) == {"a": "no GPU 1", "b": "GPU 1 assigned to another member"}
    with pytest.raises(Conflict, match="GPU 1 assigned"):
        choose_host([a, b, c], demand, named="b")
    with pytest.raises(Exhausted, match="a: no GPU 1"):
        choose_host([a, b], demand)


def test_limits_that_fit_beat_fewer_containers() -> None:
    demand = Demand(gpus=parse_gpu_request("none"), cpu=8, memory_bytes=64 * GiB)
    full = host("full", containers=0, memory_committed=100 * GiB)
    roomy = host("roomy", containers=4)
    choice = choose_host([full, roomy], demand)
    assert choice.host == "roomy"
    assert "overcommitted" in choice.reason
    too_big = Demand(gpus=parse_gpu_request("none"), memory_bytes=256 * GiB)
    with pytest.raises(Exhausted, match="only 128GiB of memory"):
        choose_host([full, roomy], too_big)


def test_ties_broken_by_free_memory_then_cpu_then_name() -> None:
    a = host("a", memory_committed=10 * GiB)
    b = host("b")
    assert choose_host([a, b], NONE).host == "b"
    assert choose_host([a, b], NONE).reason.startswith("most memory not promised")
    c = host("c", cpu_committed=8)
    d = host("d")
    assert choose_host([c, d], NONE).reason == "most CPU threads not promised (32; c has 24)"
    assert choose_host([host("y"), host("x")], NONE).reason == "equal to y on every rule; first by name"


def test_named_host_is_only_checked() -> None:
    hosts = [host("a", containers=9), host("b"), host("d", drained=True), host("t", has_template=False)]
    assert choose_host(hosts, NONE, named="a").reason == "named by the admin (--host)"
    with pytest.raises(BadInput, match="drained"):
        choose_host(hosts, NONE, named="d")
    with pytest.raises(BadInput, match="no host named zz"):
        choose_host(hosts, NONE, named="zz")
    with pytest.raises(BadInput, match="no template labgpu-minimal"):
        choose_host(hosts, Demand(gpus=parse_gpu_request("none"), template="labgpu-minimal"), named="t")


@pytest.mark.parametrize(
    ("value", "threads"), [("4", 4), ("0-3", 4), ("1,3,5", 3), ("0-1,4", 3), ("", 0), ("x", 0)]
)
def test_cpu_limit_threads(value: str, threads: int) -> None:
    assert cpu_limit_threads(value) == threads


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("16GiB", 16 * GiB),
        ("512MB", 512 * 1000**2),
        ("2147483648", 2 * GiB),
        ("50%", 64 * GiB),
        ("", 0),
        ("lots", 0),
    ],
)
def test_memory_limit_bytes(value: str, expected: int) -> None:
    assert memory_limit_bytes(value, 128 * GiB) == expected


def test_committed_sums_limits() -> None:
    assert committed([("2", "1GiB"), (None, None), ("0-3", "25%")], 8 * GiB) == (6, 3 * GiB)
