"""CAS log-in (protocol 2.0 and 3.0): the browser goes to the campus CAS server's /login with our
service URL and comes back with a service ticket, which the portal validates with the server itself
(/serviceValidate, or /p3/serviceValidate for 3.0, which also releases attributes).

The service URL carries a random ``state`` that the browser's signed cookie must match: without it a
ticket made for someone else's browser could log this one in (log-in CSRF). The ticket is validated for
exactly that service URL, so a ticket issued for another service is refused by the server.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import httpx

from labgpu.errors import N_
from labgpu.services.portal._claims import (
    BACKEND_DOWN,
    BackendDown,
    Claims,
    SignOnFailed,
    clean_groups,
    clean_text,
)
from labgpu.settings import Settings

PROVIDER = "cas"
NS = "{http://www.yale.edu/tp/cas}"
MAX_TICKET = 256
REFUSED = N_("the campus log-in did not accept this ticket (it is old, used, or was changed); log in again")


def cas_enabled(settings: Settings) -> bool:
    return bool(settings.cas_url)


def _base(settings: Settings) -> str:
    return (settings.cas_url or "").rstrip("/")


def cas_login_url(settings: Settings, service: str) -> str:
    """Where to send the browser: the CAS server's log-in page, coming back to ``service``."""
    return f"{_base(settings)}/login?{urlencode({'service': service})}"


def cas_validate(settings: Settings, *, ticket: str, service: str) -> Claims:
    """The person the CAS server vouches for with ``ticket`` (issued for ``service``).

    Raises SignOnFailed (a malformed, unknown, used or foreign ticket), BackendDown."""
    if (
        not ticket
        or len(ticket) > MAX_TICKET
        or not ticket.startswith("ST-")
        or not ticket.isascii()
        or not ticket.isprintable()
    ):
        raise SignOnFailed(REFUSED, log_message="CAS: malformed ticket")
    path = "/p3/serviceValidate" if settings.cas_version == "3.0" else "/serviceValidate"
    verify: str | bool = str(settings.cas_ca_file) if settings.cas_ca_file else True
    try:
        with httpx.Client(timeout=settings.signon_timeout, verify=verify) as client:
            response = client.get(_base(settings) + path, params={"service": service, "ticket": ticket})
            response.raise_for_status()
    except httpx.HTTPError as exc:
        raise BackendDown(
            BACKEND_DOWN, values={"backend": "CAS"}, log_message=f"CAS {path}: {type(exc).__name__}: {exc}"
        ) from None
    if b"<!DOCTYPE" in response.content or b"<!ENTITY" in response.content:
        raise BackendDown(BACKEND_DOWN, values={"backend": "CAS"}, log_message="CAS: a DTD in the answer")
    try:
        root = ET.fromstring(response.content)  # noqa: S314 - no DTD (checked above), the configured server
    except ET.ParseError as exc:
        raise BackendDown(
            BACKEND_DOWN, values={"backend": "CAS"}, log_message=f"CAS: not XML: {exc}"
        ) from None
    failure = root.find(f"{NS}authenticationFailure")
    if failure is not None:
        raise SignOnFailed(REFUSED, log_message=f"CAS: {failure.get('code')}: {(failure.text or '').strip()}")
    success = root.find(f"{NS}authenticationSuccess")
    user = clean_text(success.findtext(f"{NS}user") if success is not None else None, 255)
    if success is None or user is None:
        raise BackendDown(BACKEND_DOWN, values={"backend": "CAS"}, log_message="CAS: no user in the answer")
    attributes: dict[str, list[str]] = {}
    node = success.find(f"{NS}attributes")
    for child in list(node) if node is not None else []:
        key = child.tag.removeprefix(NS)
        attributes.setdefault(key, []).append((child.text or "").strip())

    def first(name: str) -> str | None:
        values = attributes.get(name) if name else None
        return values[0] if values else None

    return Claims(
        provider=PROVIDER,
        subject=user,
        name=clean_text(first(settings.cas_name_attribute), 64) or user[:64],
        email=clean_text(first(settings.cas_email_attribute), 254),
        display_name=clean_text(first(settings.cas_display_name_attribute), 128),
        groups=clean_groups(attributes.get(settings.cas_groups_attribute)),
    )
