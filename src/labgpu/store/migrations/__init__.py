"""Alembic environment and revisions for the store (loaded by Alembic, not imported by labgpu)."""
