"""The default container network: `host init` makes a managed bridge, a member's container takes its address,
route and resolver by DHCP, reaches a service on the host through the bridge (the stand-in for a campus
mirror: no traffic leaves the machine, so the bridge here has no NAT), and cannot reach another member's
container (isolated bridge ports)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labgpu.services.hosts import HostPaths, init_host
from tests.conftest import Cleanup, LabgpuEnv, fake_sysctl, unique_name
from tests.integration.sshutil import make_key, ssh_key

pytestmark = pytest.mark.integration


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, dict[str, object]]]:
    """A host-side HTTP server, bound once the bridge's address is known (see serve_on)."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "ubuntu.txt").write_text("a campus mirror answers\n")
    state: dict[str, object] = {}
    yield folder, state
    server = state.get("server")
    if isinstance(server, http.server.ThreadingHTTPServer):
        server.shutdown()
        server.server_close()


def serve_on(address: str, folder: Path, state: dict[str, object]) -> int:
    handler = type(
        "Quiet",
        (http.server.SimpleHTTPRequestHandler,),
        {"log_message": lambda *_a: None, "__init__": _folder_init(folder)},
    )
    server = http.server.ThreadingHTTPServer((address, 0), handler)
    state["server"] = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return int(server.server_address[1])


def _folder_init(folder: Path):  # type: ignore[no-untyped-def]
    def init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        http.server.SimpleHTTPRequestHandler.__init__(self, *args, directory=str(folder), **kwargs)

    return init


def wait_for_route(env: LabgpuEnv, container: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    route = ""
    while time.monotonic() < deadline:
        route = env.runtime.instances.exec(container, ["ip", "-4", "route", "show", "default"]).stdout.strip()
        if route:
            return route
        time.sleep(0.5)
    return route


def test_a_member_on_the_default_bridge_reaches_the_host_and_not_another_member(
    labgpu_env: LabgpuEnv,
    cleanup: Cleanup,
    tmp_path: Path,
    mirror: tuple[Path, dict[str, object]],
    daemon_kind: str,
) -> None:
    from labgpu.services.members._add import add_member, validate_request

    # The network first: cleanup runs backwards, and the profile (deleted before it) uses it.
    net = cleanup.network(unique_name("lgn"))
    profile = cleanup.profile(unique_name("lgf"))
    # A subnet of its own per daemon: the LXD and Incus runs may make their bridges at the same moment.
    subnet = f"10.123.{1 if daemon_kind == 'lxd' else 2}.1/24"
    labgpu_env.overrides.update(
        network_mode="bridge", network_name=net, profile_name=profile, network_subnet=subnet
    )
    for name in ("subuid", "subgid"):
        (tmp_path / name).write_text("root:100000:65536\n")
    paths = HostPaths(
        subuid_file=tmp_path / "subuid",
        subgid_file=tmp_path / "subgid",
        sysctl_root=fake_sysctl(tmp_path / "sysctl"),
    )
    report = init_host(
        labgpu_env.runtime, labgpu_env.settings(), nat=False, paths=paths, restart_daemon=False
    )
    steps = {s.step: s.status for s in report.steps}
    assert steps["network"] == "created" and steps["profile"] == "created", report.to_dict()
    nic = labgpu_env.runtime.profiles.get(profile).devices["eth0"]
    assert nic["network"] == net
    assert nic.get("security.port_isolation") == "true"  # both LXD 5.0 and Incus 6.0 can
    gateway = labgpu_env.runtime.networks.find(net).config["ipv4.address"].split("/")[0]  # type: ignore[union-attr]
    folder, state = mirror
    port = serve_on(gateway, folder, state)

    # The stand-in mirror for apt, pip and conda.
    root = f"http://{gateway}:{port}"
    labgpu_env.overrides.update(
        apt_mirror=root, pip_index_url=f"{root}/simple", conda_mirror=f"{root}/anaconda"
    )
    svc = labgpu_env.services()
    key = make_key(tmp_path, "net")
    pub = Path(f"{key}.pub").read_text()
    alice = add_member(svc, validate_request(svc, name=unique_name("na"), ssh_keys=[pub]))
    ben = add_member(svc, validate_request(svc, name=unique_name("nb"), ssh_keys=[pub]))

    # A default route through the bridge, by DHCP, and the host's service through it (real ssh, as the member).
    assert f"via {gateway}" in wait_for_route(labgpu_env, alice.container)
    fetch = (
        f"exec 3<>/dev/tcp/{gateway}/{port} && printf 'GET /ubuntu.txt HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    )
    r = ssh_key(key, alice.ports["ssh"], f'timeout 10 bash -c "{fetch}"')
    assert r.returncode == 0, r.stderr
    assert "a campus mirror answers" in r.stdout
    resolver = ssh_key(key, alice.ports["ssh"], "cat /etc/resolv.conf").stdout
    assert "nameserver" in resolver

    # Another member's container on the same bridge is out of reach (isolated bridge ports).
    wait_for_route(labgpu_env, ben.container)
    ben_addresses = labgpu_env.runtime.instances.state(ben.container).ipv4
    assert ben_addresses
    probe = ssh_key(
        key, alice.ports["ssh"], f"timeout 5 bash -c 'exec 3<>/dev/tcp/{ben_addresses[0]}/22' && echo open"
    )
    assert "open" not in probe.stdout

    # The mirror files are in place in the new container, the conda one the user's own.
    files = ssh_key(
        key, alice.ports["ssh"], "cat /etc/apt/sources.list /etc/pip.conf ~/.condarc; stat -c %U ~/.condarc"
    ).stdout
    assert f"deb {root}/debian bookworm main" in files
    assert f"index-url = {root}/simple" in files and f"trusted-host = {gateway}" in files
    assert f"{root}/anaconda/pkgs/main" in files
    assert files.splitlines()[-1] == "ubuntu"

    # The admin moves to another index; reconcile brings the running containers along, but a file the member
    # made their own (the marker line deleted) stays as they left it.
    assert (
        ssh_key(key, alice.ports["ssh"], "sed -i 1d ~/.condarc && echo '# mine' >> ~/.condarc").returncode
        == 0
    )
    labgpu_env.overrides.update(pip_index_url=f"{root}/other/simple", conda_mirror="tuna")
    from labgpu.services.ops import reconcile

    report = reconcile(labgpu_env.services())
    mine = [a for a in report.actions if a.member == alice.name and a.action == "mirrors"]
    assert [a.detail for a in mine] == ["package mirrors: /etc/pip.conf written"], report.actions
    after = ssh_key(key, alice.ports["ssh"], "cat /etc/pip.conf ~/.condarc").stdout
    assert f"index-url = {root}/other/simple" in after
    assert "# mine" in after and "tuna" not in after

    # doctor asks a container: the route, the bridge address, each mirror; a mirror that does not answer is
    # named, with the fix.
    from labgpu.services.hosts import run_doctor

    labgpu_env.overrides.update(conda_mirror=f"http://{gateway}:9")  # nothing listens on port 9
    report = run_doctor(labgpu_env.settings(), connect=lambda: labgpu_env.runtime)
    checks = {c.name: c for c in report.checks}
    assert checks["container-network"].ok, checks["container-network"]
    assert f"via {gateway}" in checks["container-network"].detail
    assert checks["mirror-apt"].ok and checks["mirror-pip"].ok
    assert not checks["mirror-conda"].ok
    assert f"{gateway}:9" in checks["mirror-conda"].detail and "ipv4.nat" in checks["mirror-conda"].fix
