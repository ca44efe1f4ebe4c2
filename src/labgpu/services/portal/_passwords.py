"""Portal passwords: argon2id hashing with the OWASP parameters, and the strength rules.

A password must have at least MIN_PASSWORD_LENGTH characters, must not be on the shipped list of common
passwords (``common-passwords.txt`` beside this module; its header says where it comes from and under which
licence) and must not contain the account name. Nothing is fetched from the network.
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from labgpu.errors import N_, BadInput

# OWASP Password Storage Cheat Sheet (2023+), "Argon2id": "a minimum configuration of 19 MiB of memory, an
# iteration count of 2, and 1 degree of parallelism". Hashes made with other parameters are upgraded at the
# next successful login (see labgpu.services.portal._logins.authenticate).
ARGON2_MEMORY_KIB = 19_456
ARGON2_TIME_COST = 2
ARGON2_PARALLELISM = 1

MIN_PASSWORD_LENGTH = 8
# Hashing is deliberately slow; a megabyte "password" must not be a way to burn the server's CPU.
MAX_PASSWORD_LENGTH = 1024
COMMON_PASSWORDS_FILE = Path(__file__).with_name("common-passwords.txt")


class WeakPassword(BadInput):
    """A new password is too short, too common or contains the account name."""

    reason = "weak-password"


@functools.cache
def password_hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=ARGON2_TIME_COST,
        memory_cost=ARGON2_MEMORY_KIB,
        parallelism=ARGON2_PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


@functools.cache
def common_passwords() -> frozenset[str]:
    """The shipped list of common passwords (lower case); see the header of the file for its source."""
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


# A hash of a random password, verified against when the account does not exist, so that the answer takes
# as long as for a real account (no telling names apart by timing).
@functools.cache
def _dummy_hash() -> str:
    return password_hasher().hash(secrets.token_urlsafe(16))


def check_password_strength(password: str, *, name: str | None = None) -> None:
    """Refuse a password that is too short, too long, common, or contains the account name.

    Raises WeakPassword (a BadInput: the CLI exits 2, the API answers 400)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(
            N_("the password is too short: use at least %(length)s characters"),
            values={"length": MIN_PASSWORD_LENGTH},
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(
            N_("the password is too long: use at most %(length)s characters"),
            values={"length": MAX_PASSWORD_LENGTH},
        )
    if not password.strip():
        raise WeakPassword(N_("the password must not be blank"))
    lowered = password.lower()
    if lowered in common_passwords():
        raise WeakPassword(N_("this password is on the list of the most common passwords: choose another"))
    if name and name.lower() in lowered:
        raise WeakPassword(N_("the password must not contain the account name"))


def hash_password(password: str) -> str:
    """argon2id hash (PHC string) of ``password`` with the OWASP parameters above."""
    return password_hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; False for a missing or unreadable hash.

    Takes about as long whether or not there is a hash."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return password_hasher().verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
