"""What a sign-on backend (LDAP, OIDC, CAS) proved about a person, in one shape for all of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from labgpu.errors import N_, LabgpuError, Unavailable


@dataclass(frozen=True)
class Claims:
    """A person as a sign-on backend vouched for them.

    ``provider`` and ``subject`` identify them for good (the subject never changes, whatever their name
    becomes); ``name`` is what they are called there, only a proposal for their labgpu name."""

    provider: str  # "ldap", "cas", "oidc:NAME"
    subject: str
    name: str
    email: str | None = None
    display_name: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)


class SignOnFailed(LabgpuError):
    """The backend did not vouch for the person: a wrong password, a refused or tampered answer."""

    status = 401
    reason = "signon-failed"


class BackendDown(Unavailable):
    """The directory or identity provider did not answer (or its certificate did not check out)."""

    reason = "signon-unavailable"


BACKEND_DOWN = N_("the sign-on server %(backend)s cannot be reached; try again later, or ask an admin")


def clean_text(value: object, limit: int) -> str | None:
    """A claim's value as one printable line of at most ``limit`` characters, or None."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    text = " ".join(str(value).split())[:limit]
    return text if text and text.isprintable() else None


def clean_groups(values: object) -> frozenset[str]:
    """Group names from a claim (a list, or one value); a DN counts by its first RDN's value too."""
    if values is None:
        return frozenset()
    items = values if isinstance(values, list | tuple | set | frozenset) else [values]
    groups: set[str] = set()
    for item in items:
        text = clean_text(item, 512)
        if not text:
            continue
        groups.add(text.lower())
        if "=" in text and "," in text:  # cn=gpu-users,ou=groups,dc=univ,dc=edu
            first = text.split(",", 1)[0].split("=", 1)[1].strip()
            if first:
                groups.add(first.lower())
        elif text.startswith("/"):  # Keycloak's full group paths: /lab/gpu-users
            groups.add(text.rsplit("/", 1)[-1].lower())
    return frozenset(groups)
