"""Sign-on against real servers: OpenLDAP's slapd (StartTLS), and a Django project running
django-oidc-provider (OIDC: discovery, code flow with PKCE, nonce) and django-cas-server (CAS 3.0 and 2.0
serviceValidate). The portal runs in process (tests/web/conftest.py); the providers' log-in pages are
filled in over HTTP (tests/servers/fixtures.py: provider_login)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from labgpu.services.portal._claims import BackendDown
from labgpu.services.portal._ldap import ldap_check
from labgpu.settings import load_settings
from labgpu.store.models import Application, AuditEvent, Role
from labgpu.store.models_signon import SignOnIdentity
from labgpu.web.routes.portal.signon import CLAIMS_COOKIE, FLOW_COOKIE, seal
from labgpu.web.security import SESSION_COOKIE
from tests.servers.fixtures import IdpServer, provider_login, query_of
from tests.servers.ldap import PEOPLE, LdapServer
from tests.servers.tls import make_pki
from tests.web.conftest import PASSWORD, Portal, csrf_from, login

# One worker runs these one after another: one slapd and one IdP for all of them (the IdP takes seconds).
pytestmark = pytest.mark.lane("signon")
INJECTIONS = ["*", "*)(uid=*", "alice)(|(uid=*", "al*", "alice\x00", "(uid=alice)"]


def _dir_password(uid: str) -> str:
    return PEOPLE[uid][2]


def _identities(p: Portal) -> list[SignOnIdentity]:
    with p.svc.session() as session:
        rows = list(session.scalars(select(SignOnIdentity)))
        session.expunge_all()
        return rows


# LDAP -------------------------------------------------------------------------------------------------


def test_ldap_bind_search_escaping_and_a_directory_that_is_down(
    ldap_server: LdapServer, tmp_path: Path
) -> None:
    settings = load_settings(state_dir=str(tmp_path), **ldap_server.settings())
    alice = ldap_check(settings, "alice", _dir_password("alice"))
    assert alice is not None
    assert (alice.provider, alice.name, alice.email, alice.display_name) == (
        "ldap",
        "alice",
        "alice@lab.test",
        "Alice Liu",
    )
    assert alice.groups == {"gpu-users"}
    assert len(alice.subject) == 36  # entryUUID: the same whatever alice is called later
    assert ldap_check(settings, "alice", "wrong-password") is None
    assert ldap_check(settings, "alice", "") is None  # an anonymous bind "succeeds": never asked
    assert ldap_check(settings, "nobody", "x") is None
    for name in INJECTIONS:
        assert ldap_check(settings, name, _dir_password("alice")) is None, name
    # Down: nothing listens there.
    down = load_settings(
        state_dir=str(tmp_path), **{**ldap_server.settings(), "ldap_url": "ldap://127.0.0.1:9"}
    )
    with pytest.raises(BackendDown) as raised:
        ldap_check(down, "alice", _dir_password("alice"))
    assert "cannot be reached" in raised.value.message
    # A certificate from a CA we do not trust is not a directory we talk to.
    other = make_pki(tmp_path / "other")
    untrusted = load_settings(
        state_dir=str(tmp_path), **{**ldap_server.settings(), "ldap_ca_file": str(other.ca_file)}
    )
    with pytest.raises(BackendDown):
        ldap_check(untrusted, "alice", _dir_password("alice"))


def test_ldap_log_in_first_time_applies_then_links_and_group_rules(
    make_portal: Callable[..., Portal], ldap_server: LdapServer
) -> None:
    p: Portal = make_portal(
        **ldap_server.settings(), signon_admin_groups="gpu-admins", signon_approve_groups="gpu-fast"
    )
    p.add_account("boss", role=Role.ADMIN)
    client = p.client()

    # alice is unknown here: to the application form, prefilled, no password to choose.
    r = login(client, "alice", _dir_password("alice"))
    assert r.status_code == 303 and r.headers["location"] == "/signon/apply"
    assert SESSION_COOKIE not in client.cookies
    form = client.get("/signon/apply")
    assert 'value="alice"' in form.text and 'value="alice@lab.test"' in form.text
    assert 'name="password"' not in form.text.split('id="signon-link"')[0]  # nothing to choose
    r = client.post(
        "/signon/apply",
        data={
            "csrf_token": csrf_from(form.text),
            "name": "alice",
            "email": "alice@lab.test",
            "reason": "thesis",
        },
    )
    assert r.status_code == 200 and "waits for an admin" in r.text
    with p.svc.session() as session:
        application = session.scalars(select(Application).where(Application.name == "alice")).one()
        assert application.status == "pending" and application.password_hash is None
    [ident] = _identities(p)
    assert ident.provider == "ldap" and ident.member_id is None and ident.application_id == application.id
    # Signing on again says where the application stands.
    r = login(p.client(), "alice", _dir_password("alice"))
    assert r.status_code == 200 and "waits for an admin" in r.text

    # Wrong password and filter injections: refused like any wrong log-in.
    for name, password in [("alice", "wrong"), *((n, _dir_password("alice")) for n in INJECTIONS)]:
        r = login(p.client(address="192.0.2.77"), name, password)
        assert r.status_code in (401, 422), (name, r.status_code)
        assert SESSION_COOKIE not in r.cookies

    # bob is in gpu-admins: an admin account at once, straight in.
    c = p.client()
    r = login(c, "bob", _dir_password("bob"))
    assert r.status_code == 303 and r.headers["location"] == "/me"
    assert c.get("/api/v1/me").json()["role"] == "admin"

    # carol is in gpu-fast: approved at once, no form (provisioning is queued; no daemon here).
    r = login(p.client(), "carol", _dir_password("carol"))
    assert r.status_code == 200 and "is approved" in r.text
    with p.svc.session() as session:
        carol = session.scalars(select(Application).where(Application.name == "carol")).one()
        assert (carol.status, carol.decided_by, carol.email) == (
            "approved",
            "sign-on group rule",
            "carol@lab.test",
        )
    # Once her member is made (here by hand: provisioning needs a daemon, see
    # tests/web/test_application_provisioning.py), her next sign-on links the identity to it and she is in.
    p.add_account("carol")
    with p.svc.session() as session:
        session.execute(update(Application).where(Application.name == "carol").values(status="done"))
    c = p.client()
    r = login(c, "carol", _dir_password("carol"))
    assert r.status_code == 303 and r.headers["location"] == "/me"
    assert c.get("/api/v1/me").json()["name"] == "carol"

    # A directory name that is not a Linux user name: a valid one is proposed, and why.
    c = p.client()
    login(c, "Dave.Smith", _dir_password("Dave.Smith"))
    page = c.get("/signon/apply")
    assert 'value="dave-smith"' in page.text and "not a valid Linux user name" in page.text
    r = c.post(
        "/signon/apply",
        data={"csrf_token": csrf_from(page.text), "name": "Dave.Smith", "email": "d@lab.test"},
    )
    assert r.status_code == 400 and "invalid member name" in r.text

    # The directory's "boss" is not the local admin boss: the name is taken, and there is a way on.
    c = p.client()
    login(c, "boss", _dir_password("boss"))
    page = c.get("/signon/apply")
    assert "the name boss is taken" in page.text and 'action="/signon/link"' in page.text


def test_linking_a_local_account_and_requiring_sign_on(
    make_portal: Callable[..., Portal], ldap_server: LdapServer
) -> None:
    p: Portal = make_portal(**ldap_server.settings(), signon_required="true")
    p.add_account("boss", role=Role.ADMIN)
    p.add_account("erin")  # a local member from before sign-on; the directory knows her too
    # Under signon_required her local password no longer logs her in...
    r = login(p.client(), "erin", PASSWORD)
    assert r.status_code == 401 and "campus sign-on" in r.text
    # ...her directory password does, to the form, where she links her account with the local one once.
    c = p.client()
    r = login(c, "erin", _dir_password("erin"))
    assert r.headers["location"] == "/signon/apply"
    page = c.get("/signon/apply")
    assert "the name erin is taken" in page.text
    bad = c.post(
        "/signon/link", data={"csrf_token": csrf_from(page.text), "name": "erin", "password": "nope"}
    )
    assert bad.status_code == 401
    r = c.post(
        "/signon/link",
        data={"csrf_token": csrf_from(page.text), "name": "erin", "password": PASSWORD},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/me"
    assert c.get("/api/v1/me").json()["name"] == "erin"
    # From now on the directory password alone is enough (linked by the entry's UUID).
    c2 = p.client()
    r = login(c2, "erin", _dir_password("erin"))
    assert r.status_code == 303 and r.headers["location"] == "/me"
    assert c2.get("/api/v1/me").json()["name"] == "erin"
    # The admin's local password still works.
    assert login(p.client(), "boss").status_code == 303
    with p.svc.session() as session:
        methods = [
            e.detail.get("method")
            for e in session.scalars(select(AuditEvent).where(AuditEvent.action == "account.login"))
        ]
    assert methods == ["ldap+password", "ldap", "password"]


def test_directory_down_admins_still_log_in_and_throttling_covers_ldap(
    make_portal: Callable[..., Portal], ldap_server: LdapServer
) -> None:
    p: Portal = make_portal(**{**ldap_server.settings(), "ldap_url": "ldap://127.0.0.1:9"})
    p.add_account("boss", role=Role.ADMIN)
    r = login(p.client(), "alice", _dir_password("alice"))
    assert r.status_code == 503 and "cannot be reached" in r.text
    assert login(p.client(), "boss").status_code == 303

    up: Portal = make_portal(**ldap_server.settings())
    client = up.client(address="198.51.100.9")
    for _ in range(up.settings.login_max_failures_per_account):
        assert login(client, "alice", "wrong-password").status_code == 401
    r = login(client, "alice", _dir_password("alice"))
    assert r.status_code == 429 and "Retry-After" in r.headers


# OIDC -------------------------------------------------------------------------------------------------


def _oidc_portal(make_portal: Callable[..., Portal], idp: IdpServer, **extra: object) -> Portal:
    return make_portal(oidc_providers=[idp.oidc_provider()], **extra)


def _start(client: TestClient, path: str) -> str:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    return str(r.headers["location"])


def test_oidc_code_flow_with_pkce_and_group_rules(
    make_portal: Callable[..., Portal], idp_server: IdpServer
) -> None:
    p = _oidc_portal(make_portal, idp_server, signon_admin_groups="gpu-admins")
    client = p.client()
    login_page = client.get("/login")
    assert 'href="/login/oidc/idp?next=%2Fme"' in login_page.text and "Test IdP" in login_page.text
    location = _start(client, "/login/oidc/idp")
    query = parse_qs(urlsplit(location).query)
    assert location.startswith(idp_server.issuer + "/authorize")
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"][0]
    assert query["state"][0] and query["nonce"][0] and query["response_type"] == ["code"]
    back = provider_login(location, "olivia", "olivia-idp-pass-4", until="http://testserver/")
    r = client.get(query_of(back), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signon/apply"
    page = client.get("/signon/apply")
    assert 'value="olivia"' in page.text and 'value="olivia@idp.test"' in page.text
    # The same code again: the provider refuses it (one use only).
    again = p.client()
    again.cookies.set(FLOW_COOKIE, client.cookies.get(FLOW_COOKIE) or "", domain="testserver.local")
    assert again.get(query_of(back)).status_code == 401

    # oscar is in gpu-admins: straight in, as an admin, linked by the provider's subject.
    c = p.client()
    back = provider_login(
        _start(c, "/login/oidc/idp"), "oscar", "oscar-idp-pass-4", until="http://testserver/"
    )
    r = c.get(query_of(back), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/me"
    assert c.get("/api/v1/me").json() == {**c.get("/api/v1/me").json(), "name": "oscar", "role": "admin"}
    [oscar] = [i for i in _identities(p) if i.member_id is not None]
    assert oscar.provider == "oidc:idp" and oscar.subject.isdigit()


def _tamper(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode({**query, **changes})))


def test_oidc_tampered_state_nonce_or_verifier_is_refused(
    make_portal: Callable[..., Portal], idp_server: IdpServer
) -> None:
    p = _oidc_portal(make_portal, idp_server)
    secret = p.app.state.secret_key
    client = p.client()
    back = provider_login(
        _start(client, "/login/oidc/idp"), "olivia", "olivia-idp-pass-4", until="http://testserver/"
    )
    # A state that is not the one this browser was sent off with.
    r = client.get(query_of(_tamper(back, state="forged-state")))
    assert r.status_code == 401 and "does not belong to this log-in" in r.text
    # A flow cookie changed by the browser: its signature fails.
    c = p.client()
    back = provider_login(
        _start(c, "/login/oidc/idp"), "olivia", "olivia-idp-pass-4", until="http://testserver/"
    )
    body, mac = (c.cookies.get(FLOW_COOKIE) or "").split(".")
    flow = json.loads(base64.urlsafe_b64decode(body))
    c.cookies.set(FLOW_COOKIE, body[:-4] + "AAAA." + mac, domain="testserver.local")
    assert c.get(query_of(back)).status_code == 401

    # A wrong nonce or PKCE verifier under a valid signature (made here with the portal's key): the ID
    # token's nonce, and the provider's PKCE check, refuse them.
    class Req:
        app = p.app

    for change, expected in ((dict(nonce="other-nonce"), "nonce"), (dict(verifier="x" * 64), "token")):
        c = p.client()
        back = provider_login(
            _start(c, "/login/oidc/idp"), "olivia", "olivia-idp-pass-4", until="http://testserver/"
        )
        body = (c.cookies.get(FLOW_COOKIE) or "").split(".")[0]
        flow = json.loads(base64.urlsafe_b64decode(body))
        flow.pop("exp")
        forged = seal(Req, "oidc", {**flow, **change}, 600)  # type: ignore[arg-type]
        c.cookies.set(FLOW_COOKIE, forged, domain="testserver.local")
        r = c.get(query_of(back), follow_redirects=False)
        assert r.status_code == 401, (expected, r.status_code)
        assert SESSION_COOKIE not in c.cookies
    assert secret  # the key never left the server; the test only borrowed it
    with p.svc.session() as session:
        failures = list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "account.login.failed"))
        )
    reasons = " ".join(str(e.detail) for e in failures)
    assert "nonce" in reasons and "state" in reasons


# CAS --------------------------------------------------------------------------------------------------


def _with_flow(p: Portal, flow: str) -> TestClient:
    """A browser that holds ``flow`` as its sign-on cookie (a refusal clears the cookie it came with)."""
    client = p.client()
    client.cookies.set(FLOW_COOKIE, flow, domain="testserver.local")
    return client


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_cas_ticket_validation_and_tampered_tickets(
    make_portal: Callable[..., Portal], idp_server: IdpServer, version: str
) -> None:
    p: Portal = make_portal(cas_url=idp_server.cas_url, cas_version=version)
    client = p.client()
    assert 'id="signon-cas"' in client.get("/login").text
    location = _start(client, "/login/cas")
    assert location.startswith(idp_server.cas_url + "/login?service=")
    back = provider_login(location, "casey", "casey-idp-pass-4", until="http://testserver/")
    flow = client.cookies.get(FLOW_COOKIE) or ""
    ticket = parse_qs(urlsplit(back).query)["ticket"][0]
    # A changed ticket, a ticket that is not a service ticket, another state: all refused...
    for tampered in (
        _tamper(back, ticket=ticket[:-2] + "zz"),
        _tamper(back, ticket="PGT-1-x"),
        _tamper(back, state="forged"),
    ):
        r = _with_flow(p, flow).get(query_of(tampered), follow_redirects=False)
        assert r.status_code == 401, tampered
        assert SESSION_COOKIE not in r.cookies
    # ...and the real ticket for this browser works once.
    r = _with_flow(p, flow).get(query_of(back), follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signon/apply"
    assert _with_flow(p, flow).get(query_of(back)).status_code == 401  # used already
    c = p.client()
    c.cookies.set(CLAIMS_COOKIE, r.cookies[CLAIMS_COOKIE], domain="testserver.local")
    page = c.get("/signon/apply")
    assert 'value="casey"' in page.text
    if version == "3.0":  # attributes come with protocol 3.0 only
        assert 'value="casey@idp.test"' in page.text and "Casey Ma" in page.text
