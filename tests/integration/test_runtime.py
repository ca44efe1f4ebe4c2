"""The runtime client against real LXD and Incus daemons."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.runtime.errors import (
    OperationFailed,
    RuntimeBadRequest,
    RuntimeConflict,
    RuntimeError_,
    RuntimeNotFound,
    RuntimeUnavailable,
)
from tests.conftest import Cleanup, unique_name

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_server_info_names_the_daemon(runtime: RuntimeClient, daemon_kind: str) -> None:
    info = runtime.server()
    assert info.kind == daemon_kind
    assert info.trusted
    major = int(info.version.split(".")[0])
    assert major >= (5 if daemon_kind == "lxd" else 6)
    assert info.has("instances") or info.has("container_full")


def test_instance_lifecycle_create_exec_files_devices(
    runtime: RuntimeClient, cleanup: Cleanup, busybox_image: str
) -> None:
    name = cleanup.instance(unique_name("rt"))
    runtime.instances.create(
        name,
        image=busybox_image,
        config={"user.labgpu.owner": "alice", "limits.cpu": "1", "limits.memory": "256MiB"},
        devices={"scratch": {"type": "disk", "source": "/tmp", "path": "/mnt/hosttmp", "readonly": "true"}},
    )
    inst = runtime.instances.get(name)
    # Everything given at creation is there, set by the one create request.
    assert inst.status == "Stopped"
    assert inst.label("owner") == "alice"
    assert inst.config["limits.memory"] == "256MiB"
    assert inst.devices["scratch"]["path"] == "/mnt/hosttmp"

    runtime.instances.start(name)
    state = runtime.instances.state(name)
    assert state.status == "Running"
    assert state.pid > 0

    result = runtime.instances.exec(name, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    # Arguments go through as they are: no shell sees them.
    tricky = "a b; rm -rf / $(reboot) 'q'"
    assert runtime.instances.exec(name, ["echo", tricky]).stdout == tricky + "\n"

    runtime.instances.push_file(name, "/root/hello.txt", b"hi there\n", mode=0o600)
    assert runtime.instances.pull_file(name, "/root/hello.txt") == b"hi there\n"
    assert runtime.instances.exec(name, ["stat", "-c", "%a", "/root/hello.txt"]).stdout.strip() == "600"
    with pytest.raises(RuntimeNotFound):
        runtime.instances.pull_file(name, "/root/missing.txt")

    port = free_port()
    runtime.instances.add_device(
        name, "ssh", {"type": "proxy", "listen": f"tcp:127.0.0.1:{port}", "connect": "tcp:127.0.0.1:22"}
    )
    assert runtime.instances.get(name).devices["ssh"]["listen"] == f"tcp:127.0.0.1:{port}"
    runtime.instances.remove_device(name, "ssh")
    assert "ssh" not in runtime.instances.get(name).devices
    assert runtime.instances.get(name).devices["scratch"]["readonly"] == "true"

    runtime.instances.restart(name, force=True)
    assert runtime.instances.state(name).status == "Running"
    runtime.instances.stop(name, force=True)
    assert runtime.instances.get(name).status == "Stopped"
    runtime.instances.delete(name)
    assert not runtime.instances.exists(name)


def test_list_is_one_request_with_state(runtime: RuntimeClient, cleanup: Cleanup, busybox_image: str) -> None:
    names = [cleanup.instance(unique_name("ls")) for _ in range(3)]
    for n in names:
        runtime.instances.create(n, image=busybox_image, config={"user.labgpu.owner": "bench"})
    runtime.instances.start(names[0])
    before = runtime.request_count
    listed = {i.name: i for i in runtime.instances.all()}
    assert runtime.request_count - before == 1
    assert set(names) <= set(listed)
    assert listed[names[0]].state is not None and listed[names[0]].state.status == "Running"
    assert listed[names[1]].status == "Stopped"


def test_errors_are_typed(runtime: RuntimeClient, cleanup: Cleanup, busybox_image: str) -> None:
    with pytest.raises(RuntimeNotFound):
        runtime.instances.get(unique_name("missing"))
    name = cleanup.instance(unique_name("dup"))
    runtime.instances.create(name, image=busybox_image)
    with pytest.raises(RuntimeConflict):
        runtime.instances.create(name, image=busybox_image)
    with pytest.raises(RuntimeNotFound):
        runtime.instances.create(unique_name("noimg"), image="no-such-image-alias")
    bad = cleanup.instance(unique_name("badcfg"))
    # LXD says 400, Incus 500: either way a typed error naming the value, and nothing half-made.
    with pytest.raises((RuntimeBadRequest, OperationFailed, RuntimeError_)) as err:
        runtime.instances.create(bad, image=busybox_image, config={"limits.memory": "lots"})
    assert "lots" in str(err.value)
    assert not runtime.instances.exists(bad)


def test_unreachable_daemon_says_where_it_looked(tmp_path: Path) -> None:
    client = RuntimeClient(Endpoint.unix(tmp_path / "nope.sock"), timeout=2)
    with pytest.raises(RuntimeUnavailable) as err:
        client.server()
    assert str(tmp_path / "nope.sock") in err.value.message
    assert err.value.hint and "start" in err.value.hint


def test_images_import_alias_and_properties(
    runtime: RuntimeClient, cleanup: Cleanup, busybox_image: str
) -> None:
    fp = runtime.images.resolve_alias(busybox_image)
    assert fp is not None
    image = runtime.images.get(fp)
    assert busybox_image in image.aliases
    assert image.properties.get("labgpu.recipe")
    alias = unique_name("alias")
    runtime.images.set_alias(alias, fp)
    cleanup.add("alias", lambda: runtime.images.delete_alias(alias))
    assert runtime.images.resolve_alias(alias) == fp
    runtime.images.set_alias(alias, fp)  # idempotent
    runtime.images.delete_alias(alias)
    assert runtime.images.resolve_alias(alias) is None


def test_profiles_pools_networks(runtime: RuntimeClient, cleanup: Cleanup) -> None:
    prof = cleanup.profile(unique_name("prof"))
    runtime.profiles.create(prof, config={"limits.cpu": "2"}, description="test")
    assert runtime.profiles.get(prof).config == {"limits.cpu": "2"}
    runtime.profiles.replace(prof, config={"limits.cpu": "1"}, devices={}, description="changed")
    got = runtime.profiles.get(prof)
    assert (got.config, got.description) == ({"limits.cpu": "1"}, "changed")
    with pytest.raises(RuntimeConflict):
        runtime.profiles.create(prof)

    pool = cleanup.pool(unique_name("pool"))
    runtime.storage_pools.create(pool, driver="dir")
    assert runtime.storage_pools.get(pool).driver == "dir"
    assert runtime.storage_pools.find(unique_name("nopool")) is None

    assert any(n.name == "lo" for n in runtime.networks.all())


def test_create_with_start_runs_the_instance_on_both_daemons(
    runtime: RuntimeClient, cleanup: Cleanup, busybox_image: str
) -> None:
    name = cleanup.instance(unique_name("st"))
    runtime.instances.create(name, image=busybox_image, start=True)
    assert runtime.instances.state(name).status == "Running"
