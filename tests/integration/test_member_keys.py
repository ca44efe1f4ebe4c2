"""SSH keys in the container: the member's own lines in authorized_keys are kept when labgpu changes its
keys, and a key changed while the container was stopped is there once it starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from labgpu.services.members._add import add_member, validate_request
from labgpu.services.members._keys import add_keys, remove_key
from labgpu.services.members._power import set_power
from tests.conftest import LabgpuEnv, unique_name
from tests.integration.sshutil import make_key

pytestmark = pytest.mark.integration
AUTHORIZED = "/home/ubuntu/.ssh/authorized_keys"


def test_own_keys_are_kept_and_keys_changed_while_stopped_arrive_at_the_start(
    labgpu_env: LabgpuEnv, tmp_path: Path
) -> None:
    svc = labgpu_env.services()
    name = unique_name("ky")
    first, second, own, late = (Path(f"{make_key(tmp_path, n)}.pub").read_text().strip() for n in "abcd")
    add_member(svc, validate_request(svc, name=name, gpus="none", ssh_keys=[first]), wait_ssh=False)

    def lines() -> list[str]:
        return svc.runtime.instances.pull_file(name, AUTHORIZED).decode().splitlines()

    assert first in lines()
    # The member adds a key of their own (ssh-copy-id does this), then the portal adds another.
    appended = svc.runtime.instances.exec(name, ["sh", "-c", f'echo "$1" >> {AUTHORIZED}', "sh", own])
    assert appended.ok, appended.stderr
    add_keys(svc, name, [second])
    assert {first, second, own} <= set(lines())
    # Removing a key labgpu installed takes it out; the member's own stays.
    remove_key(svc, name, first.split()[-1])
    assert first not in lines() and {second, own} <= set(lines())

    # Stopped: the key is recorded, and written in when the container starts.
    set_power(svc, name, "stop", force=True)
    add_keys(svc, name, [late])
    set_power(svc, name, "start")
    assert {second, own, late} <= set(lines())
