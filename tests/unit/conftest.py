"""Fixtures shared by unit test modules (each module may still define its own of the same name)."""

from tests.unit.gpu_store import gpu_store

__all__ = ["gpu_store"]
