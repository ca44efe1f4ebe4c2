"""Sign-on rules without servers: the settings refuse what would be unsafe or could never work, names from
a backend become valid member names, and group claims match by name, DN or path."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgpu.errors import ConfigError
from labgpu.services.portal import Claims, suggest_name
from labgpu.services.portal._claims import clean_groups
from labgpu.settings import load_settings


@pytest.mark.parametrize(
    ("setting", "value", "why"),
    [
        ("cas_url", "http://cas.univ.edu/cas", "https"),
        ("ldap_url", "https://ldap.univ.edu", "ldap://"),
        ("ldap_user_filter", "(objectClass=person)", "{name}"),
        ("ldap_user_filter", "uid={name}", "parenthesized"),
        ("oidc_providers", '[{"name": "kc", "issuer": "http://sso.univ.edu", "client_id": "c"}]', "https"),
        (
            "oidc_providers",
            '[{"name": "Bad Name", "issuer": "https://sso.univ.edu", "client_id": "c"}]',
            "name",
        ),
    ],
)
def test_unsafe_or_unworkable_sign_on_settings_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str, value: str, why: str
) -> None:
    monkeypatch.setenv(f"LABGPU_{setting.upper()}", value)
    with pytest.raises(ConfigError) as raised:
        load_settings(state_dir=str(tmp_path))
    assert setting in raised.value.message and why in raised.value.message


def test_sign_on_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABGPU_LDAP_URL", "ldaps://dc1.ad.univ.edu")
    monkeypatch.setenv("LABGPU_LDAP_USER_BASE", "OU=Students,DC=ad,DC=univ,DC=edu")
    monkeypatch.setenv("LABGPU_LDAP_BIND_DN", "CN=svc-labgpu,DC=ad,DC=univ,DC=edu")
    monkeypatch.setenv("LABGPU_LDAP_BIND_PASSWORD", "s3cret-bind")
    monkeypatch.setenv(
        "LABGPU_OIDC_PROVIDERS",
        '[{"name": "kc", "issuer": "https://sso.univ.edu/realms/lab", "client_id": "labgpu"}]',
    )
    settings = load_settings(state_dir=str(tmp_path))
    assert settings.ldap_url == "ldaps://dc1.ad.univ.edu"
    assert settings.ldap_user_base.startswith("OU=Students")
    assert (
        settings.ldap_bind_password is not None
        and settings.ldap_bind_password.get_secret_value() == "s3cret-bind"
    )
    assert settings.oidc_providers[0].issuer.endswith("/realms/lab")
    assert settings.cas_url is None and settings.ldap_user_filter == "(uid={name})"


@pytest.mark.parametrize(
    ("name", "email", "proposed"),
    [
        ("alice", None, "alice"),
        ("Dave.Smith", None, "dave-smith"),
        ("2023310123", "zhang.san@stu.univ.edu.cn", "zhang-san"),
        ("王小明", "xm.wang@univ.edu.cn", "xm-wang"),
        ("x", None, ""),
    ],
)
def test_backend_names_become_member_names(name: str, email: str | None, proposed: str) -> None:
    assert suggest_name(Claims("cas", "s", name, email=email)) == proposed


def test_groups_match_by_name_dn_or_path() -> None:
    groups = clean_groups(["cn=GPU-Users,ou=groups,dc=univ,dc=edu", "/lab/gpu-admins", "plain", b"\xff"])
    assert {"gpu-users", "gpu-admins", "plain"} <= groups
    assert clean_groups(None) == frozenset() and clean_groups("one") == {"one"}
