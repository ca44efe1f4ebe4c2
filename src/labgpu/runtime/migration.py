"""Moving instances: between members of one cluster, and between two daemons (the migration API).

A cluster moves an instance itself (``POST /1.0/instances/NAME?target=MEMBER``). Between two daemons
that are not one cluster, one daemon streams the instance to the other over websockets that the
migration API sets up: in ``pull`` mode the destination connects to the source, in ``push`` mode the
source connects to the destination. Either way the daemons do the copying; this module only starts
both halves and waits for them. Both wait on their background operations explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from labgpu.errors import LabgpuError
from labgpu.runtime.errors import RuntimeError_

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient

Devices = dict[str, dict[str, str]]
PULL = "pull"
PUSH = "push"


def _path(name: str) -> str:
    return f"/1.0/instances/{quote(name, safe='')}"


def move_in_cluster(client: RuntimeClient, name: str, target: str, *, timeout: float | None = None) -> None:
    """Move the STOPPED instance ``name`` to cluster member ``target`` (cold: no CRIU needed).

    The cluster copies the root filesystem (and snapshots) on local pools, or only re-points it on
    shared ones, keeping name, config and devices. Waits for the operation. Raises the typed errors
    of a failed request or operation (e.g. RuntimeBadRequest when it still runs)."""
    client.call(
        "POST",
        _path(name),
        what=f"move instance {name} to {target}",
        json={"name": name, "migration": True, "live": False},
        params={"target": target},
        timeout=timeout,
    )


@dataclass(frozen=True)
class Peer:
    """One side of a copy: the client labgpu uses, and how the OTHER daemon can reach this one."""

    client: RuntimeClient
    url: str | None  # https://host:port the other daemon can connect to; None: not reachable (unix only)
    certificate: str | None  # this daemon's certificate (PEM), so the other one can pin it


def copy_mode(source: Peer, dest: Peer) -> str:
    """``pull`` when the destination can reach the source, else ``push`` when the source can reach
    the destination. Raises RuntimeError_ when neither has an HTTPS address."""
    if source.url and source.certificate:
        return PULL
    if dest.url and dest.certificate:
        return PUSH
    raise RuntimeError_(
        "neither daemon can reach the other: at least one of them needs an HTTPS address "
        "(core.https_address) and must be added to labgpu by it"
    )


def copy_instance(
    source: Peer,
    dest: Peer,
    name: str,
    *,
    config: dict[str, str],
    devices: Devices,
    profiles: list[str],
    description: str = "",
    timeout: float | None = None,
    started: Callable[[], object] | None = None,
) -> str:
    """Copy the STOPPED instance ``name`` (with its snapshots) to another daemon under the same name,
    with ``config``, ``devices`` and ``profiles`` replacing its own (what the new host needs).

    ``started`` is called once both daemons have their halves (they go on without us from there).
    Returns the mode used (``pull`` or ``push``). Waits for both halves; on failure, whatever the
    destination made of it may be left there (the caller deletes it). Raises RuntimeError_ (neither side
    reachable), RuntimeConflict (the name is taken there), OperationFailed."""
    mode = copy_mode(source, dest)
    inst = source.client.instances.get(name)
    body: dict[str, Any] = {
        "name": name,
        "type": "container",
        "architecture": inst.architecture,
        "config": config,
        "devices": devices,
        "profiles": profiles,
        "description": description,
    }
    params = {"target": dest.client.target} if dest.client.target else None
    what = f"copy instance {name}"
    if mode == PULL:
        assert source.url is not None
        source_op = source.client.call(
            "POST", _path(name), what=f"{what} (source)", json={"migration": True, "live": False}, wait=False
        )
        secrets = _secrets(source.client, source_op)
        body["source"] = {
            "type": "migration",
            "mode": "pull",
            "live": False,
            "operation": f"{source.url}/1.0/operations/{source_op}",
            "certificate": source.certificate,
            "secrets": secrets,
        }
        dest_op = dest.client.call(
            "POST", "/1.0/instances", what=f"{what} (destination)", json=body, params=params, wait=False
        )
    else:
        assert dest.url is not None
        body["source"] = {"type": "migration", "mode": "push", "live": False}
        dest_op = dest.client.call(
            "POST", "/1.0/instances", what=f"{what} (destination)", json=body, params=params, wait=False
        )
        secrets = _secrets(dest.client, dest_op)
        target = {
            "operation": f"{dest.url}/1.0/operations/{dest_op}",
            "certificate": dest.certificate,
            "secrets": secrets,
        }
        source_op = source.client.call(
            "POST",
            _path(name),
            what=f"{what} (source)",
            json={"migration": True, "live": False, "target": target},
            wait=False,
        )
    if started is not None:
        started()
    try:
        dest.client.wait(dest_op, what=f"{what} (destination)", timeout=timeout)
    except Exception:
        # The source half would wait for a peer that is gone: cancel it, and say what went wrong.
        with contextlib.suppress(LabgpuError):
            source.client.raw("DELETE", f"/1.0/operations/{source_op}", project=False)
        raise
    source.client.wait(source_op, what=f"{what} (source)", timeout=timeout)
    return mode


def _secrets(client: RuntimeClient, operation_id: str) -> dict[str, str]:
    op = client.get(f"/1.0/operations/{operation_id}", what="read migration operation", project=False)
    secrets = (op or {}).get("metadata") or {}
    return {str(k): str(v) for k, v in secrets.items()}


def running_operations(client: RuntimeClient, name: str) -> list[str]:
    """Ids of the daemon's running operations that concern instance ``name`` (a copy or move still
    under way after labgpu was killed)."""
    data = client.get("/1.0/operations", what="list operations", params={"recursion": 1}) or {}
    wanted = _path(name)
    out = []
    for op in data.get("running") or []:
        resources = (op.get("resources") or {}).get("instances") or []
        if any(str(r).split("?")[0] == wanted for r in resources):
            out.append(str(op.get("id")))
    return out
