"""Fuzzing the JSON API from its own OpenAPI document (schemathesis, in process over ASGI), as an admin
with a personal API token, against a real LXD/Incus daemon: no 5xx, every status and body as documented.

Bounded for CI (a few examples per operation); LABGPU_FUZZ_FULL=1 runs many more. Approvals do not
provision (the app's background worker is off) and the profile is one that does not exist, so nothing
the fuzzer sends can create a container or change a shared profile."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _tokens as api_tokens
from labgpu.services.portal._accounts import Identity
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.conftest import LabgpuEnv, unique_name
from tests.web.conftest import PASSWORD

pytestmark = pytest.mark.integration
FULL = os.environ.get("LABGPU_FUZZ_FULL") == "1"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def fuzzed_app(labgpu_env: LabgpuEnv) -> Any:
    labgpu_env.overrides["profile_name"] = unique_name("no-such-profile")
    svc = labgpu_env.services()
    accounts.create_account(svc, name="boss", password=PASSWORD, role=Role.ADMIN)
    info = accounts.get_account(svc, "boss")
    assert info.role == "admin"
    from sqlalchemy import select

    from labgpu.store.models import Member

    with svc.session() as session:
        member_id = session.scalars(select(Member.id).where(Member.name == "boss")).one()
    token, _ = api_tokens.create_token(
        svc, Identity(member_id, "boss", "admin", "token"), name="fuzz", expires_days=1
    )
    app = create_app(svc.settings, services=svc, background=False)
    with TestClient(app):
        yield app, token


def test_the_api_keeps_its_openapi_promises(fuzzed_app: Any) -> None:
    app, token = fuzzed_app
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    calls: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE) | operation.as_strategy(
            generation_mode=GenerationMode.NEGATIVE
        )

        @given(case=strategy)
        @settings(
            max_examples=200 if FULL else 8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=not FULL,
            database=None,
        )
        def fuzz(case: Any) -> None:
            calls.append(1)
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)

        try:
            fuzz()
        except Exception as exc:  # every operation is tried; all failures are reported together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    assert operations >= 35 and len(calls) >= 3 * operations
    assert failures == [], "\n\n".join(failures)
