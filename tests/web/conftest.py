"""Web fixtures: the portal in process (FastAPI's TestClient) on a real store.

Every test that takes ``portal`` runs on SQLite and, when LABGPU_TEST_POSTGRES_URL is set, again on
PostgreSQL (a fresh database per test session, emptied before each test), as tests/unit/test_store.py
does. These tests need no LXD/Incus daemon: the settings point at a socket that does not exist, so pages
that ask the daemon show it as unreachable. Tests with a real daemon use ``labgpu_env`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from labgpu.services.context import Actor, Services
from labgpu.services.portal import _accounts as accounts
from labgpu.settings import Settings, load_settings
from labgpu.store.migrate import upgrade
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.postgres import empty_postgres

PASSWORD = "plum-tractor-71-orbit"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def web_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    settings = load_settings(
        state_dir=str(tmp_path / "state"),
        database_url=url,
        runtime_url=f"unix://{tmp_path}/no-daemon.sock",
        trusted_proxies="",
    )
    upgrade(settings)
    return settings


@dataclass
class Portal:
    """One test's portal: the app, services acting as the CLI, and clients from chosen addresses."""

    app: FastAPI
    settings: Settings

    @property
    def svc(self) -> Services:
        services: Services = self.app.state.services
        return Services(
            settings=services.settings,
            runtime=services.runtime,
            sessions=services.sessions,
            actor=Actor("root@cli"),
        )

    def client(self, address: str = "192.0.2.10", **kwargs: object) -> TestClient:
        return TestClient(self.app, client=(address, 40000), **kwargs)  # type: ignore[arg-type]

    def add_account(self, name: str, *, role: Role = Role.MEMBER, password: str = PASSWORD) -> None:
        accounts.create_account(self.svc, name=name, password=password, role=role)

    def rebuilt(self) -> Portal:
        """A second app on the same store (a restart, or another worker)."""
        return Portal(create_app(self.settings), self.settings)


@pytest.fixture
def portal(web_settings: Settings) -> Iterator[Portal]:
    app = create_app(web_settings)
    with TestClient(app):  # runs the lifespan (disposes of the engine at the end)
        yield Portal(app, web_settings)


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "no csrf_token field on the page"
    return match.group(1)


def login(client: TestClient, name: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    """Log in through the form, as a browser does (get the form, post it with its CSRF token)."""
    page = client.get("/login")
    token = csrf_from(page.text)
    return client.post(
        "/login",
        data={"name": name, "password": password, "csrf_token": token, **extra},
        follow_redirects=False,
    )


def page_token(client: TestClient, path: str = "/account") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text[:300]
    return csrf_from(response.text)


# Sign-on (tests/web/test_signon.py, tests/security) ---------------------------------------------------------


@pytest.fixture
def make_portal(web_settings: Settings) -> Iterator[Callable[..., Portal]]:
    """Portals on the test's store with extra settings (LDAP, OIDC, CAS; several may be made in one test).
    No background worker: approved applications stay queued."""
    clients: list[TestClient] = []

    def make(**extra: object) -> Portal:
        settings = load_settings(
            state_dir=str(web_settings.state_dir),
            database_url=web_settings.database_url,
            runtime_url=web_settings.runtime_url,
            trusted_proxies="",
            **extra,
        )
        app = create_app(settings, background=False)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return Portal(app, settings)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def signed_claims(
    app: FastAPI, *, name: str, provider: str = "ldap", subject: str | None = None, **more: object
) -> str:
    """The cookie a browser holds after signing on as someone without an account (as the portal seals it)."""
    from labgpu.web.routes.portal.signon import seal

    class _Request:  # what seal() reads: the app (for its secret key)
        pass

    request = _Request()
    request.app = app  # type: ignore[attr-defined]
    data = {"provider": provider, "subject": subject or f"subject-{name}", "name": name, "groups": [], **more}
    return seal(request, "claims", data, 600)  # type: ignore[arg-type]
