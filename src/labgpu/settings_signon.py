"""The sign-on settings (LDAP/AD, OpenID Connect, CAS, and the group rules for the accounts they open),
declared beside each other so that "what does this setting affect" needs no grep. :class:`Settings`
(``labgpu.settings``) takes them in as they are: ``ldap_url`` is ``LABGPU_LDAP_URL`` and so on. Used by
``services/portal/_signon.py`` and its backends."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator


def _web_url(value: str | None, what: str) -> str | None:
    """An https URL (or http to this machine's loopback, for a provider on the same host or a test)."""
    if not value:
        return value
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if not parts.hostname or not (parts.scheme == "https" or (parts.scheme == "http" and loopback)):
        raise ValueError(
            f"{what} must be an https:// URL (tickets and codes must not cross the network in clear)"
        )
    return value


class OidcProvider(BaseModel):
    """One OpenID Connect provider (Keycloak, Azure AD, Google Workspace): a button on the log-in page."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Short id, in URLs; never rename it."
    )
    label: str = Field("", max_length=64, description="Button text. Empty: the name.")
    issuer: str = Field(description="Issuer URL; discovery reads ISSUER/.well-known/openid-configuration.")
    client_id: str
    client_secret: SecretStr | None = None
    scopes: str = "openid email profile"
    name_claim: str = "preferred_username"
    email_claim: str = "email"
    display_name_claim: str = "name"
    groups_claim: str = "groups"
    ca_file: Path | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        return _web_url(value, "an OIDC issuer") or value


class SignOnSettings(BaseModel):
    """Log-in backends besides local passwords; see docs/admin/signon.md."""

    ldap_url: str | None = Field(
        None,
        description="LDAP or Active Directory server: ldap://host (StartTLS, see ldap_starttls) or "
        "ldaps://host. Empty: no LDAP log-in.",
    )
    ldap_starttls: bool = Field(
        True,
        description="Upgrade an ldap:// connection with StartTLS before any password is sent. Turn off only "
        "for a server on the same machine or a test.",
    )
    ldap_ca_file: Path | None = Field(
        None,
        description="CA certificates (PEM) that the LDAP server's certificate must chain to. Empty: the "
        "system's CA store.",
    )
    ldap_user_base: str = Field("", description="Where users are searched, e.g. ou=people,dc=univ,dc=edu.")
    ldap_user_filter: str = Field(
        "(uid={name})",
        description="Filter that finds a user; {name} is the name typed, escaped per RFC 4515. Active "
        "Directory: (sAMAccountName={name}).",
    )
    ldap_bind_dn: str | None = Field(
        None, description="The service account that searches for users. Empty: search anonymously."
    )
    ldap_bind_password: SecretStr | None = Field(None, description="Password of ldap_bind_dn.")
    ldap_subject_attribute: str = Field(
        "entryUUID",
        description="Attribute that identifies a user for good, whatever their name becomes: entryUUID "
        "(OpenLDAP), objectGUID (Active Directory).",
    )
    ldap_name_attribute: str = Field(
        "uid", description="Attribute proposed as the labgpu name at a first log-in (AD: sAMAccountName)."
    )
    ldap_email_attribute: str = Field("mail", description="Attribute holding the e-mail address.")
    ldap_display_name_attribute: str = Field(
        "cn", description="Attribute holding the person's full name (AD: displayName)."
    )
    ldap_group_base: str = Field(
        "",
        description="Where groups are searched for group rules. Empty: the user's memberOf attribute names "
        "their groups (Active Directory, OpenLDAP with the memberof overlay).",
    )
    ldap_group_filter: str = Field(
        "(|(member={dn})(uniqueMember={dn})(memberUid={name}))",
        description="Filter that finds a user's groups under ldap_group_base; {dn} and {name} are the "
        "user's DN and name, escaped. A group is known by its cn.",
    )
    ldap_timeout: float = Field(
        5.0, gt=0, description="Seconds to wait for the LDAP server to connect or answer."
    )
    oidc_providers: list[OidcProvider] = Field(
        [],
        description="OpenID Connect providers, each a button on the log-in page: a list of tables with "
        "name, label, issuer, client_id, client_secret and optionally scopes, name_claim, email_claim, "
        "display_name_claim, groups_claim, ca_file (docs/admin/signon.md). Environment: a JSON list.",
    )
    cas_url: str | None = Field(
        None,
        description="The campus CAS server's prefix, e.g. https://cas.univ.edu/cas (its /login and "
        "/serviceValidate are below it). Empty: no CAS log-in.",
    )
    cas_version: Literal["2.0", "3.0"] = Field(
        "3.0",
        description="CAS protocol: 3.0 (/p3/serviceValidate, with attributes) or 2.0 (/serviceValidate).",
    )
    cas_label: str = Field("Campus log-in", description="Text of the CAS button on the log-in page.")
    cas_name_attribute: str = Field(
        "", description="CAS attribute proposed as the labgpu name. Empty: the CAS user itself."
    )
    cas_email_attribute: str = Field("mail", description="CAS attribute holding the e-mail address.")
    cas_display_name_attribute: str = Field(
        "displayName", description="CAS attribute holding the person's full name."
    )
    cas_groups_attribute: str = Field("memberOf", description="CAS attribute listing the person's groups.")
    cas_ca_file: Path | None = Field(
        None, description="CA certificates (PEM) for the CAS server's HTTPS. Empty: the system's CA store."
    )
    signon_timeout: float = Field(
        10.0, gt=0, description="Seconds to wait for an OIDC provider or the CAS server to answer."
    )
    signon_member_groups: str = Field(
        "",
        description="Comma-separated groups (LDAP, OIDC or CAS) whose members may apply for an account "
        "after signing on. Empty: anyone who signs on may apply.",
    )
    signon_approve_groups: str = Field(
        "",
        description="Comma-separated groups whose members' applications are approved at once when they "
        "first sign on (their container is made without waiting for an admin).",
    )
    signon_admin_groups: str = Field(
        "",
        description="Comma-separated groups whose members get an admin account (no container) at their "
        "first sign-on. Empty: admins are only made with `labgpu admin create`.",
    )
    signon_required: bool = Field(
        False,
        description="Members must log in through LDAP, OIDC or CAS: local passwords work for admins only "
        "(so the admins still get in while the directory is down).",
    )

    @field_validator("ldap_url")
    @classmethod
    def _ldap_url(cls, value: str | None) -> str | None:
        if value and not value.lower().startswith(("ldap://", "ldaps://")):
            raise ValueError("ldap_url must start with ldap:// (StartTLS) or ldaps://")
        return value

    @field_validator("ldap_user_filter")
    @classmethod
    def _user_filter(cls, value: str) -> str:
        if "{name}" not in value or not (value.startswith("(") and value.endswith(")")):
            raise ValueError("ldap_user_filter must be a parenthesized LDAP filter containing {name}")
        return value

    @field_validator("cas_url")
    @classmethod
    def _cas_url(cls, value: str | None) -> str | None:
        return _web_url(value, "cas_url")
