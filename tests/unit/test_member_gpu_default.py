"""A new member's GPUs when the admin gave no choice: default_gpus, except where GPUs are assigned or booked."""

from __future__ import annotations

import pytest

from labgpu.domain.members import parse_gpu_request
from labgpu.services.members._add import gpus_for_host
from labgpu.services.members._records import MemberRequest
from labgpu.store.models import Host


def _request(gpus: str, *, given: bool) -> MemberRequest:
    return MemberRequest(
        name="alice",
        template="labgpu-minimal",
        cpu=None,
        memory_bytes=None,
        disk_bytes=None,
        gpus=parse_gpu_request(gpus),
        shares=(),
        keys=(),
        purposes=("ssh",),
        email=None,
        gpus_given=given,
    )


@pytest.mark.parametrize("mode", ["assigned", "booked"])
def test_the_default_gives_no_gpus_on_an_assigned_or_booked_host_and_says_so(mode: str) -> None:
    request, note = gpus_for_host(_request("all", given=False), Host(name="gpu1", gpu_mode=mode))
    assert str(request.gpus) == "none"
    assert note is not None and f"gpu1 shares its GPUs in {mode} mode" in note


def test_the_default_stays_on_a_shared_host() -> None:
    original = _request("all", given=False)
    request, note = gpus_for_host(original, Host(name="gpu1", gpu_mode="shared"))
    assert request == original and note is None


@pytest.mark.parametrize("mode", ["shared", "assigned", "booked"])
def test_an_explicit_choice_is_kept_everywhere(mode: str) -> None:
    original = _request("0,1", given=True)
    request, note = gpus_for_host(original, Host(name="gpu1", gpu_mode=mode))
    assert request == original and note is None


def test_a_default_of_none_needs_no_note() -> None:
    original = _request("none", given=False)
    assert gpus_for_host(original, Host(name="gpu1", gpu_mode="booked")) == (original, None)
