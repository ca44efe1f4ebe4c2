"""LDAP and Active Directory log-in (ldap3): search for the user with the service account, then bind as
the user with the password they typed.

Every value put into a filter is escaped per RFC 4515 (``escape_filter_chars``), so a name like
``*)(uid=*`` matches nobody instead of everybody. An ldap:// connection is upgraded with StartTLS
before any password is sent (``ldap_starttls``); ldaps:// is TLS from the start; the server's certificate
is checked against ``ldap_ca_file`` or the system's CA store. An empty password is refused before the
server is asked (a simple bind without one is an anonymous bind, which "succeeds").
"""

from __future__ import annotations

import contextlib
import ssl
import uuid
from typing import Any

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPInvalidCredentialsResult
from ldap3.utils.conv import escape_filter_chars

from labgpu.services.portal._claims import BACKEND_DOWN, BackendDown, Claims, clean_groups, clean_text
from labgpu.settings import Settings

PROVIDER = "ldap"
MAX_NAME = 64


def ldap_enabled(settings: Settings) -> bool:
    return bool(settings.ldap_url)


def _server(settings: Settings) -> Server:
    url = settings.ldap_url or ""
    tls = Tls(
        validate=ssl.CERT_REQUIRED,
        version=ssl.PROTOCOL_TLS_CLIENT,
        ca_certs_file=str(settings.ldap_ca_file) if settings.ldap_ca_file else None,
    )
    return Server(
        url,
        use_ssl=url.lower().startswith("ldaps://"),
        tls=tls,
        get_info=NONE,
        connect_timeout=settings.ldap_timeout,
    )


def _open(settings: Settings, server: Server, user: str | None, password: str | None) -> Connection:
    """A bound connection, or LDAPInvalidCredentialsResult/LDAPBindError for wrong credentials.
    Raises BackendDown when the server cannot be reached or its TLS does not check out."""
    conn = Connection(
        server,
        user=user,
        password=password,
        receive_timeout=int(settings.ldap_timeout) or 1,
        raise_exceptions=True,
        read_only=True,
    )
    try:
        conn.open()
        if settings.ldap_starttls and not server.ssl:
            conn.start_tls()
        conn.bind()
    except (LDAPInvalidCredentialsResult, LDAPBindError):
        conn.unbind()
        raise
    except (LDAPException, OSError, ssl.SSLError) as exc:
        with contextlib.suppress(LDAPException, OSError):
            conn.unbind()
        raise BackendDown(
            BACKEND_DOWN,
            values={"backend": "LDAP"},
            log_message=f"LDAP {settings.ldap_url}: {type(exc).__name__}: {exc}",
        ) from None
    return conn


def _value(entry: dict[str, Any], attribute: str) -> object:
    raw = entry.get("raw_attributes", {}).get(attribute) or entry.get("raw_attributes", {}).get(
        attribute.lower()
    )
    if raw:
        return raw[0]
    for key, value in entry.get("attributes", {}).items():
        if key.lower() == attribute.lower():
            return value
    return None


def _subject(value: object) -> str | None:
    """The stable subject: entryUUID is text; AD's objectGUID is 16 bytes (little-endian UUID)."""
    if isinstance(value, bytes):
        try:
            text = value.decode("ascii")
            if text.isprintable():
                return text[:255] or None
        except UnicodeDecodeError:
            pass
        if len(value) == 16:
            return str(uuid.UUID(bytes_le=value))
        return value.hex()[:255] or None
    return clean_text(value, 255)


def ldap_check(settings: Settings, name: str, password: str) -> Claims | None:
    """The directory's word on ``name`` and ``password``: their claims, or None when the name is unknown
    (or ambiguous) or the password wrong. Raises BackendDown when the directory cannot be reached."""
    name = name.strip()
    if not ldap_enabled(settings) or not name or not password or len(name) > MAX_NAME:
        return None
    if not name.isprintable():
        return None
    server = _server(settings)
    bind_password = settings.ldap_bind_password.get_secret_value() if settings.ldap_bind_password else None
    try:
        conn = _open(settings, server, settings.ldap_bind_dn, bind_password)
    except (LDAPInvalidCredentialsResult, LDAPBindError):
        raise BackendDown(
            BACKEND_DOWN,
            values={"backend": "LDAP"},
            log_message="LDAP: the service account (ldap_bind_dn) was refused",
        ) from None
    subject_attr = settings.ldap_subject_attribute
    attributes = [
        subject_attr,
        settings.ldap_name_attribute,
        settings.ldap_email_attribute,
        settings.ldap_display_name_attribute,
    ]
    if not settings.ldap_group_base:
        attributes.append("memberOf")
    query = settings.ldap_user_filter.replace("{name}", escape_filter_chars(name))
    try:
        conn.search(settings.ldap_user_base, query, SUBTREE, attributes=attributes, size_limit=2)
        entries = [e for e in conn.response or [] if e.get("type") == "searchResEntry"]
        if len(entries) != 1:
            return None
        entry = entries[0]
        dn = str(entry["dn"])
        groups: object
        if settings.ldap_group_base:
            group_query = settings.ldap_group_filter.replace("{dn}", escape_filter_chars(dn)).replace(
                "{name}", escape_filter_chars(name)
            )
            conn.search(settings.ldap_group_base, group_query, SUBTREE, attributes=["cn"])
            groups = [_value(g, "cn") for g in conn.response or [] if g.get("type") == "searchResEntry"]
        else:
            groups = entry.get("attributes", {}).get("memberOf")
    except LDAPException as exc:
        raise BackendDown(
            BACKEND_DOWN, values={"backend": "LDAP"}, log_message=f"LDAP search: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        conn.unbind()
    try:
        _open(settings, server, dn, password).unbind()
    except (LDAPInvalidCredentialsResult, LDAPBindError):
        return None
    subject = _subject(_value(entry, subject_attr))
    if subject is None:
        raise BackendDown(
            BACKEND_DOWN,
            values={"backend": "LDAP"},
            log_message=f"LDAP: {dn} has no {subject_attr} (ldap_subject_attribute)",
        )
    return Claims(
        provider=PROVIDER,
        subject=subject,
        name=clean_text(_value(entry, settings.ldap_name_attribute), 64) or name,
        email=clean_text(_value(entry, settings.ldap_email_attribute), 254),
        display_name=clean_text(_value(entry, settings.ldap_display_name_attribute), 128),
        groups=clean_groups(groups),
    )
