"""Conversions from service results to what pages and the API show."""

from __future__ import annotations

from labgpu.services.members import connection_sheet

__all__ = ["connection_sheet"]
