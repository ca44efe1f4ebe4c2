"""The VNC password's own rules (services/members/_desktop.py): what VNC would cut or garble is refused with
a message saying why, before anything reaches a container."""

from __future__ import annotations

import pytest

from labgpu.errors import BadInput
from labgpu.services.members._desktop import check_vnc_password


@pytest.mark.parametrize("password", ["Vn8-pear", "abc DEF!", "~~~~~~~~"])
def test_eight_printable_ascii_characters_are_taken(password: str) -> None:
    check_vnc_password(password)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short7!", "exactly 8 characters"),
        ("Desk-top-2026-walnut", "exactly 8 characters"),  # VNC would silently use only "Desk-top"
        ("", "exactly 8 characters"),
        ("密码密码密码密码", "English keyboard"),
        ("tab\there", "English keyboard"),
        ("line\nfee", "English keyboard"),
    ],
)
def test_what_vnc_would_cut_or_garble_is_refused_saying_why(password: str, why: str) -> None:
    with pytest.raises(BadInput, match=why):
        check_vnc_password(password)
