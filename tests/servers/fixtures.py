"""Session fixtures that start the real sign-on servers (one of each per test session and worker), and
a small browser-like client that logs in at them over HTTP for the service-level tests.

Import the fixtures into a conftest: ``from tests.servers.fixtures import idp_server, ldap_server``."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from tests.servers.idp.serve import CLIENT_ID, CLIENT_SECRET
from tests.servers.ldap import LdapServer, running_slapd

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ldap_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LdapServer]:
    """slapd with the test directory (tests/servers/ldap.py: PEOPLE, GROUPS), StartTLS on."""
    with running_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


@dataclass(frozen=True)
class IdpServer:
    url: str

    @property
    def issuer(self) -> str:
        return self.url + "/openid"

    @property
    def cas_url(self) -> str:
        return self.url + "/cas"

    def oidc_provider(self, **extra: object) -> dict[str, object]:
        """The labgpu setting for this provider (an entry of oidc_providers), named ``idp``."""
        return {
            "name": "idp",
            "label": "Test IdP",
            "issuer": self.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": "openid email profile groups",
            **extra,
        }

    def allow_redirect(self, uri: str) -> None:
        httpx.get(self.url + "/testing/allow-redirect", params={"uri": uri}, timeout=10).raise_for_status()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def idp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdpServer]:
    """The test identity provider (tests/servers/idp: django-oidc-provider and django-cas-server)."""
    folder = tmp_path_factory.mktemp("idp")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "LABGPU_TEST_IDP_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = (folder / "idp.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.idp.serve", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                httpx.get(url + "/openid/.well-known/openid-configuration", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "the test IdP did not start:\n" + (folder / "idp.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.2)
        yield IdpServer(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# Logging in at the providers without a browser -------------------------------------------------------------


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((values.get("action", ""), {}))
        elif tag == "input" and self.forms and values.get("name"):
            self.forms[-1][1][values["name"]] = values.get("value", "")


def provider_login(start: str, username: str, password: str, *, until: str) -> str:
    """Follow ``start`` at a provider as a browser would, fill in its log-in form with ``username`` and
    ``password``, and return the first URL it sends the browser to that starts with ``until`` (the
    portal's callback, with its code and state or its ticket)."""
    with httpx.Client(timeout=20) as client:
        url = start
        submitted = False
        for _ in range(12):
            response = client.get(url) if not isinstance(url, tuple) else client.post(url[0], data=url[1])
            if response.is_redirect:
                url = urljoin(str(response.url), response.headers["location"])
                if url.startswith(until):
                    return url
                continue
            if submitted:
                raise AssertionError(f"the provider did not log {username} in: {response.text[:500]}")
            parser = _Forms()
            parser.feed(response.text)
            action, fields = next(f for f in parser.forms if "password" in f[1])
            fields.update(username=username, password=password)
            url = (urljoin(str(response.url), action or str(response.url)), fields)  # type: ignore[assignment]
            submitted = True
        raise AssertionError("too many redirects at the provider")


def query_of(url: str) -> str:
    """The path and query of ``url`` (to replay a provider's redirect on the in-process portal)."""
    return re.sub(r"^https?://[^/]+", "", url)
