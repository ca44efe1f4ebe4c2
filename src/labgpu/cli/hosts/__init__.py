"""The hosts feature on the command line: `labgpu host ...` (init, add, list, rm, drain, undrain, set,
install-services), `labgpu host gateway ...`, `labgpu container list` and `labgpu doctor`. Mounted in
:mod:`labgpu.cli.main`."""

from __future__ import annotations

from labgpu.cli.hosts._containers import container_app
from labgpu.cli.hosts._doctor import doctor
from labgpu.cli.hosts._gateway import gateway_app
from labgpu.cli.hosts._host import app

__all__ = ["app", "container_app", "doctor", "gateway_app"]
