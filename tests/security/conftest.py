"""Fixtures for the security tests: the portal of tests/web (imported, not copied, so both suites run the
same app on the same stores: SQLite, and PostgreSQL when LABGPU_TEST_POSTGRES_URL is set), and the GPU
portal of tests/web/gpus (a served `labgpu agent` and a portal that trusts its token) for bookings."""

from tests.web.conftest import make_portal, portal, web_settings
from tests.web.gpus.conftest import gpu_agent, gpu_portal

__all__ = ["gpu_agent", "gpu_portal", "make_portal", "portal", "web_settings"]
