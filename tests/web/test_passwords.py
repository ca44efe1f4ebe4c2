"""Password hashing and rules: argon2id with OWASP parameters, rehash on login, the common list."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher, Type
from sqlalchemy import select

from labgpu.services.portal import _logins as logins
from labgpu.services.portal import _passwords as passwords
from labgpu.services.portal._passwords import (
    WeakPassword,
    check_password_strength,
    hash_password,
    verify_password,
)
from labgpu.store.models import Account, Member
from tests.web.conftest import PASSWORD, Portal, login


def test_hashes_are_argon2id_with_the_owasp_parameters() -> None:
    stored = hash_password("amber-window-44-cloud")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert verify_password(stored, "amber-window-44-cloud")
    assert not verify_password(stored, "amber-window-44-clouD")
    assert not verify_password(None, "anything-at-all")
    assert not verify_password("not a hash", "anything-at-all")
    assert hash_password("amber-window-44-cloud") != stored  # salted


def test_the_common_password_list_is_shipped_and_used() -> None:
    common = passwords.common_passwords()
    assert 5000 <= len(common) <= 20000
    assert {"password", "12345678", "iloveyou", "sunshine"} <= common
    assert all(len(p) >= passwords.MIN_PASSWORD_LENGTH for p in common)
    with pytest.raises(WeakPassword):
        check_password_strength("SunShine")
    check_password_strength("sunshine-on-the-Yangtze")


@pytest.mark.parametrize(
    "password",
    ["1234567", "        ", "x" * (passwords.MAX_PASSWORD_LENGTH + 1), "baseball", "FOOTBALL"],
)
def test_weak_passwords(password: str) -> None:
    with pytest.raises(WeakPassword):
        check_password_strength(password)


def test_password_containing_the_name_is_refused() -> None:
    with pytest.raises(WeakPassword, match="account name"):
        check_password_strength("my-name-is-Alice!", name="alice")
    check_password_strength("my-name-is-Bob!!", name="alice")


def test_an_old_hash_is_upgraded_at_the_next_login(portal: Portal) -> None:
    portal.add_account("alice")
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID).hash(PASSWORD)
    with portal.svc.session() as s:
        account = s.scalars(select(Account).join(Member).where(Member.name == "alice")).one()
        account.password_hash = weak
    assert login(portal.client(), "alice").status_code == 303
    with portal.svc.session() as s:
        upgraded = s.scalars(select(Account.password_hash).join(Member).where(Member.name == "alice")).one()
    assert upgraded != weak
    assert upgraded is not None and upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    # A wrong password never rewrites the hash.
    with pytest.raises(logins.LoginFailed):
        logins.authenticate(
            portal.svc, name="alice", password="nope-nope-nope", source_address="x", user_agent=None
        )
