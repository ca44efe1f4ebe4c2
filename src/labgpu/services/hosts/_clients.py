"""Reaching a host from a use case: its runtime client, a :class:`Services` bound to it, whether it is local.

How a host's URL becomes a client (certificates, cluster targets, the per-host cache) is in
:mod:`labgpu.services.clients`, beside :mod:`labgpu.services.context`, which holds the cache."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labgpu.runtime.client import RuntimeClient
    from labgpu.services.context import Services
    from labgpu.store.models import Host


def runtime_for(svc: Services, host: Host | None) -> RuntimeClient:
    """The client for ``host``: ``svc.runtime`` for the local daemon (no host, or a row without URL)."""
    if host is None or host.url is None:
        return svc.runtime
    return svc.clients.get(svc.settings, host)


def services_for(svc: Services, host: Host | None) -> Services:
    """``svc`` talking to ``host``'s daemon instead of the local one (the same store, actor and
    registry). The local host gets ``svc`` itself."""
    runtime = runtime_for(svc, host)
    return svc if runtime is svc.runtime else replace(svc, runtime=runtime)


def is_local(host: Host | None) -> bool:
    """Whether ``host``'s daemon runs on this machine (its folders are this machine's folders)."""
    return host is None or host.url is None or host.url.startswith("unix:")
