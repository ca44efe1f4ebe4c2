"""Fixtures for the security tests: the portal of tests/web (imported, not copied, so both suites run the
same app on the same stores: SQLite, and PostgreSQL when LABGPU_TEST_POSTGRES_URL is set)."""

from tests.web.conftest import portal, postgres_url, web_settings

__all__ = ["portal", "postgres_url", "web_settings"]
