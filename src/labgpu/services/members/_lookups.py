"""Which member is the person at the keyboard: for commands that default to "you"."""

from __future__ import annotations

import getpass
import os

from sqlalchemy import select

from labgpu.services.context import Services
from labgpu.store.models import Member


def invoking_member(svc: Services) -> str | None:
    """The member named like the person running this process (under sudo: the sudo user), or None when
    there is no such member or the login name cannot be read. Reads the store; no daemon."""
    try:
        user = os.environ.get("SUDO_USER") or getpass.getuser()
    except (KeyError, OSError):
        return None
    if not user:
        return None
    with svc.session() as session:
        found = session.scalars(select(Member.id).where(Member.name == user)).first()
    return user if found is not None else None
