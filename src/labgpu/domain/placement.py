"""Where a new container goes: pure rules over what each host has and already carries.

A host can take a container when it answered, is not drained, has the template and profile, has the
GPUs asked for (free ones, where its GPUs are assigned to members), and has at least as much memory as
the container's limit. Among those, the choice is by, in order:

1. free GPUs, when the member wants every GPU ("all"): the most;
2. whether the new container's CPU and memory limits still fit beside the limits already given
   there (no overcommit) - preferred;
3. the fewest containers;
4. the most memory not yet promised to other containers' limits;
5. the most CPU threads not yet promised;
6. the name, so that the same state always gives the same answer.

The reason given says which rule decided against the runner-up, and why the others were not eligible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from labgpu.domain.members import GpuRequest, format_size
from labgpu.errors import BadInput, Conflict, Exhausted


@dataclass(frozen=True)
class Candidate:
    """One host as placement sees it."""

    name: str
    reachable: bool = True
    error: str | None = None
    drained: bool = False
    has_template: bool = True
    has_profile: bool = True
    gpus: Mapping[int, str] = field(default_factory=dict)  # index -> PCI address (NVIDIA)
    gpu_mode: str = "shared"
    gpus_assigned: frozenset[int] = frozenset()  # indexes already given to members (assigned mode)
    cpu_threads: int | None = None
    memory_total: int | None = None
    cpu_committed: int = 0  # sum of the limits.cpu of the containers there
    memory_committed: int = 0  # sum of their limits.memory, in bytes
    containers: int = 0

    def free_gpus(self) -> set[int]:
        if self.gpu_mode == "assigned":
            return set(self.gpus) - set(self.gpus_assigned)
        return set(self.gpus)


@dataclass(frozen=True)
class Demand:
    """What the new container asks for."""

    gpus: GpuRequest
    cpu: int | None = None
    memory_bytes: int | None = None
    template: str = ""


@dataclass(frozen=True)
class Choice:
    host: str
    reason: str
    skipped: tuple[tuple[str, str], ...] = ()  # (host, why it was not eligible)

    @property
    def summary(self) -> str:
        text = f"placed on {self.host}: {self.reason}"
        if self.skipped:
            text += "; not eligible: " + ", ".join(f"{h} ({why})" for h, why in self.skipped)
        return text


def why_not(c: Candidate, demand: Demand) -> str | None:
    """Why ``c`` cannot take the container, or None when it can."""
    if not c.reachable:
        return f"unreachable: {c.error}" if c.error else "unreachable"
    if c.drained:
        return "drained"
    if not c.has_profile:
        return "no labgpu profile (run `labgpu host init` there)"
    if not c.has_template:
        return f"no template {demand.template}" if demand.template else "no template"
    if demand.gpus.mode == "indexes":
        missing = [i for i in demand.gpus.indexes if i not in c.gpus]
        if missing:
            return f"no GPU {','.join(map(str, missing))}"
        taken = [i for i in demand.gpus.indexes if c.gpu_mode == "assigned" and i in c.gpus_assigned]
        if taken:
            return f"GPU {','.join(map(str, taken))} assigned to another member"
    if (
        demand.memory_bytes is not None
        and c.memory_total is not None
        and demand.memory_bytes > c.memory_total
    ):
        return f"only {format_size(c.memory_total)} of memory"
    return None


def _fits(c: Candidate, demand: Demand) -> bool:
    memory_ok = c.memory_total is None or c.memory_committed + (demand.memory_bytes or 0) <= c.memory_total
    cpu_ok = c.cpu_threads is None or c.cpu_committed + (demand.cpu or 0) <= c.cpu_threads
    return memory_ok and cpu_ok


def _free_memory(c: Candidate) -> int:
    return (c.memory_total or 0) - c.memory_committed


def _free_cpu(c: Candidate) -> int:
    return (c.cpu_threads or 0) - c.cpu_committed


def _key(c: Candidate, demand: Demand) -> tuple[int, int, int, int, int, str]:
    wants_all = demand.gpus.mode == "all"
    return (
        -len(c.free_gpus()) if wants_all else 0,
        0 if _fits(c, demand) else 1,
        c.containers,
        -_free_memory(c),
        -_free_cpu(c),
        c.name,
    )


def _explain(best: Candidate, runner: Candidate, demand: Demand) -> str:
    a, b = _key(best, demand), _key(runner, demand)
    if a[0] != b[0]:
        return f"most free GPUs ({len(best.free_gpus())}; {runner.name} has {len(runner.free_gpus())})"
    if a[1] != b[1]:
        return f"its CPU and memory limits fit there without overcommitting ({runner.name} would be overcommitted)"
    if a[2] != b[2]:
        return f"fewest containers ({best.containers}; {runner.name} has {runner.containers})"
    if a[3] != b[3]:
        return (
            f"most memory not promised to other containers ({format_size(max(_free_memory(best), 1))}; "
            f"{runner.name} has {format_size(max(_free_memory(runner), 1))})"
        )
    if a[4] != b[4]:
        return f"most CPU threads not promised ({_free_cpu(best)}; {runner.name} has {_free_cpu(runner)})"
    return f"equal to {runner.name} on every rule; first by name"


def choose_host(candidates: Sequence[Candidate], demand: Demand, *, named: str | None = None) -> Choice:
    """The host for a new container. ``named``: the admin's choice, only checked.

    Raises BadInput (no such host, or the named host cannot take it), Conflict (its GPUs are
    assigned), Exhausted (no host can take it; the message says why for each)."""
    by_name = {c.name: c for c in candidates}
    if named is not None:
        c = by_name.get(named)
        if c is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise BadInput(f"no host named {named} (hosts: {known})")
        why = why_not(c, demand)
        if why is not None:
            error = Conflict if "assigned to another member" in why else BadInput
            hint = f"`labgpu host undrain {named}`, or choose another host" if why == "drained" else None
            raise error(f"host {named} cannot take the container: {why}", hint=hint)
        return Choice(host=named, reason="named by the admin (--host)")
    skipped = tuple((c.name, why) for c in candidates if (why := why_not(c, demand)) is not None)
    eligible = sorted((c for c in candidates if why_not(c, demand) is None), key=lambda c: _key(c, demand))
    if not eligible:
        detail = "; ".join(f"{h}: {why}" for h, why in skipped) or "no hosts"
        raise Exhausted(
            f"no host can take the container ({detail})",
            hint="undrain a host, add one (`labgpu host add`), or name one with --host",
        )
    best = eligible[0]
    reason = "the only host that can take it" if len(eligible) == 1 else _explain(best, eligible[1], demand)
    return Choice(host=best.name, reason=reason, skipped=skipped)


# Limits already given to containers ------------------------------------------------------------------

_RANGE = re.compile(r"^(\d+)-(\d+)$")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]i?B?|B)?\s*$", re.IGNORECASE)
_DECIMAL = {"K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "P": 1000**5, "E": 1000**6}
_BINARY = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5, "E": 1024**6}


def cpu_limit_threads(value: str | None) -> int:
    """How many CPU threads a ``limits.cpu`` value gives: "4" -> 4, "0-3" -> 4, "1,3,5" -> 3; 0 when
    unset or not understood (no limit promises nothing)."""
    text = (value or "").strip()
    if not text:
        return 0
    if text.isdigit():
        return int(text)
    total = 0
    for part in text.split(","):
        part = part.strip()
        if part.isdigit():
            total += 1
        elif m := _RANGE.match(part):
            total += int(m.group(2)) - int(m.group(1)) + 1
        else:
            return 0
    return total


def memory_limit_bytes(value: str | None, total: int | None) -> int:
    """Bytes a ``limits.memory`` value promises: "16GiB", "512MB", "2147483648", "50%" (of ``total``);
    0 when unset or not understood."""
    text = (value or "").strip()
    if not text:
        return 0
    if text.endswith("%"):
        try:
            return int(float(text[:-1]) / 100 * (total or 0))
        except ValueError:
            return 0
    m = _MEMORY.match(text)
    if not m:
        return 0
    unit = (m.group(2) or "").upper()
    factor = 1 if unit in ("", "B") else (_BINARY if "I" in unit else _DECIMAL)[unit[0]]
    return int(float(m.group(1)) * factor)


def committed(limits: Iterable[tuple[str | None, str | None]], memory_total: int | None) -> tuple[int, int]:
    """(CPU threads, memory bytes) promised by containers' (limits.cpu, limits.memory) pairs."""
    cpu = memory = 0
    for cpu_value, memory_value in limits:
        cpu += cpu_limit_threads(cpu_value)
        memory += memory_limit_bytes(memory_value, memory_total)
    return cpu, memory
