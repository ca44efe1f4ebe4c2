"""/etc/subuid and /etc/subgid: which ids root may map into containers.

LXD and Incus read root's ranges from these files at start-up; a host uid can only be mapped into a
container with ``raw.idmap`` when it lies in one of them. Pure functions: reading and writing the
files is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SubidRange:
    """One ``owner:start:count`` line."""

    owner: str
    start: int
    count: int

    @property
    def end(self) -> int:
        """One past the last id of the range."""
        return self.start + self.count

    def __str__(self) -> str:
        return f"{self.owner}:{self.start}:{self.count}"


def _same_owner(a: str, b: str) -> bool:
    # A line may name root by uid.
    return a == b or {a, b} == {"root", "0"}


def parse_subid(text: str) -> list[SubidRange]:
    """The ranges in a subuid/subgid file; comments, blank and malformed lines are skipped."""
    out: list[SubidRange] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != 3:
            continue
        owner, start, count = parts
        if not (owner and start.isdigit() and count.isdigit()) or int(count) == 0:
            continue
        out.append(SubidRange(owner, int(start), int(count)))
    return out


def missing_ranges(ranges: list[SubidRange], *, owner: str, start: int, count: int) -> list[SubidRange]:
    """The parts of ``start .. start+count-1`` that no range of ``owner`` covers yet, in order."""
    covered = sorted((r.start, r.end) for r in ranges if _same_owner(r.owner, owner))
    out: list[SubidRange] = []
    pos, end = start, start + count
    for lo, hi in covered:
        if hi <= pos:
            continue
        if lo >= end:
            break
        if lo > pos:
            out.append(SubidRange(owner, pos, lo - pos))
        pos = max(pos, hi)
        if pos >= end:
            break
    if pos < end:
        out.append(SubidRange(owner, pos, end - pos))
    return out


def add_subid_range(text: str, *, owner: str, start: int, count: int) -> tuple[str, list[SubidRange]]:
    """The file content with the missing parts of the range appended, and those parts.

    Existing lines are kept exactly as they are, never removed or rewritten. When nothing is missing
    the text comes back unchanged.
    """
    ranges = parse_subid(text)
    added = missing_ranges(ranges, owner=owner, start=start, count=count)
    if not added:
        return text, []
    head = text if not text or text.endswith("\n") else text + "\n"
    return head + "".join(f"{r}\n" for r in added), added


# LXD and Incus map containers' own ids onto the first range of root's that has at least this many ids
# (shared/idmap: DefaultIdmapSet); smaller ranges are only "allowed" for raw.idmap.
CONTAINER_MAP_MIN = 65536


def container_map_range(ranges: list[SubidRange], *, owner: str = "root") -> SubidRange | None:
    """The range the daemon maps every container's uids 0..N onto: root's first range of 65536 or more."""
    return next((r for r in ranges if _same_owner(r.owner, owner) and r.count >= CONTAINER_MAP_MIN), None)


def clash_with_container_map(ranges: list[SubidRange], *, start: int, count: int) -> SubidRange | None:
    """The containers' range when ``start .. start+count-1`` overlaps it, else None.

    Members' home uids must not lie inside it: a container's own uid would then be the same host uid
    as a member's home files.
    """
    shared = container_map_range(ranges)
    if shared is not None and start < shared.end and shared.start < start + count:
        return shared
    return None
