"""The members feature on the command line: `labgpu member ...` (with `member key`, `member move` and `member template`) and
`labgpu share ...` (host folders mounted into members' containers). Mounted in :mod:`labgpu.cli.main`."""

from __future__ import annotations

from labgpu.cli.members._keys import key_app
from labgpu.cli.members._member import app
from labgpu.cli.members._shares import share_app
from labgpu.cli.members._templates import template_app

__all__ = ["app", "key_app", "share_app", "template_app"]
