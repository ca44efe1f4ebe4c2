"""`labgpu host add/list/rm/drain` and `container list` against real daemons: a standalone one, a
cluster added through one member, and hosts that do not answer."""

from __future__ import annotations

import json
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from labgpu.cli.main import run
from labgpu.store.models import Host, HostKind, Member, MemberState
from tests.integration.multihost.conftest import Daemon, HostsEnv

pytestmark = pytest.mark.integration


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    code, out, err = cli(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_add_standalone_with_a_token_pins_and_trusts(
    hosts_env: HostsEnv, test_daemons: dict[str, Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    s1 = test_daemons["s1"]
    added = cli_json(capsys, "host", "add", "gpu-a", s1.url, "--token", s1.token())
    assert isinstance(added, dict)
    assert added["names"] == ["gpu-a"]
    assert added["kind"] == "incus" and added["cluster"] is None
    assert added["fingerprint"] == s1.fingerprint()
    assert added["trusted_now"] is True

    state = Path(hosts_env.overrides["state_dir"])
    key = state / "certs" / "client.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pinned = state / "certs" / "hosts" / "gpu-a.crt"
    assert "BEGIN CERTIFICATE" in pinned.read_text()

    hosts = cli_json(capsys, "host", "list")
    assert isinstance(hosts, list)
    by_name = {h["name"]: h for h in hosts}
    a = by_name["gpu-a"]
    assert a["reachable"] is True, a
    assert a["kind"] == "incus" and a["version"].startswith("6.")
    assert a["address"] == s1.address  # members connect to the address labgpu reaches it at
    assert a["cpu_threads"] >= 1 and a["memory_total"] > 0
    assert a["containers"] == len(s1.instances())
    assert any(h["local"] for h in hosts)  # the local daemon is a host too

    # The same daemon again, under another name: refused, nothing recorded.
    code, _, err = cli(capsys, "host", "add", "gpu-b", s1.url, "--yes")
    assert code == 2 and "known already, as host gpu-a" in err
    code, _, err = cli(capsys, "host", "add", "gpu-a", test_daemons["s2"].url, "--yes")
    assert code == 2 and "exists already" in err

    # A token works once: a second labgpu (another state dir) cannot reuse it.
    svc = hosts_env.services()
    with svc.session() as session:
        assert [h.name for h in session.scalars(select(Host).where(Host.url.is_not(None)))] == ["gpu-a"]


def test_certificate_not_pinned_without_a_reason(
    hosts_env: HostsEnv, test_daemons: dict[str, Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    s1, s2 = test_daemons["s1"], test_daemons["s2"]
    # No token, no fingerprint, no --yes: nothing pinned (--json never asks).
    code, _, err = cli(capsys, "host", "add", "x1", s1.url, "--json")
    assert code == 2 and "not pinned" in err and s1.fingerprint() in err
    # A fingerprint that is not the daemon's.
    code, _, err = cli(capsys, "host", "add", "x1", s1.url, "--fingerprint", "ab" * 32)
    assert code == 2 and "refusing" in err
    # A token made by ANOTHER daemon: its fingerprint does not match what answers at that address.
    code, _, err = cli(capsys, "host", "add", "x1", s1.url, "--token", s2.token())
    assert code == 2 and "token was made by the daemon with certificate" in err
    # The right fingerprint, but no way to be trusted: says how.
    code, _, err = cli(capsys, "host", "add", "x1", s1.url, "--fingerprint", s1.fingerprint()[:16])
    assert code == 2 and "does not trust labgpu" in err and "config trust add" in err
    # Not a token at all.
    code, _, err = cli(capsys, "host", "add", "x1", s1.url, "--token", "not-a-token")
    assert code == 2 and "not a trust token" in err
    svc = hosts_env.services()
    with svc.session() as session:
        assert session.scalars(select(Host).where(Host.url.is_not(None))).all() == []
    assert not list((Path(hosts_env.overrides["state_dir"]) / "certs" / "hosts").glob("*.crt"))


def test_cluster_added_once_members_become_hosts(
    hosts_env: HostsEnv, test_daemons: dict[str, Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    c1, c2 = test_daemons["c1"], test_daemons["c2"]
    # Through the SECOND member's address: any member will do.
    added = cli_json(capsys, "host", "add", "lab", c2.url, "--token", c2.token())
    assert isinstance(added, dict)
    assert added["cluster"] == "lab"
    assert sorted(added["names"]) == ["c1", "c2"]
    assert any("c1 is reached at its own address https://10.231.0.11:8443" in n for n in added["notes"])

    hosts = {h["name"]: h for h in cli_json(capsys, "host", "list")}  # type: ignore[union-attr]
    for name, daemon in (("c1", c1), ("c2", c2)):
        h = hosts[name]
        assert h["reachable"] is True, h
        assert h["cluster"] == "lab" and h["target"] == name
        assert h["address"] == daemon.address
        assert h["containers"] == len(daemon.instances())

    # Forget the whole cluster by its name: both rows go, the daemons' instances stay.
    before = {n: set(d.instances()) for n, d in (("c1", c1), ("c2", c2))}
    code, out, err = cli(capsys, "host", "rm", "lab")
    assert code == 0, err
    assert "c1, c2" in out
    assert {n: set(d.instances()) for n, d in (("c1", c1), ("c2", c2))} == before
    fps = {c["fingerprint"] for c in c1.client.get("/1.0/certificates", what="x", params={"recursion": 1})}
    from labgpu.runtime.certs import certificate_fingerprint

    assert certificate_fingerprint(hosts_env.client_cert.read_text()) not in fps


class HungServer:
    """FAKE host: accepts TCP connections and never answers (a daemon that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    def close(self) -> None:
        self.stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def hung_server() -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def _add_fake_host(hosts_env: HostsEnv, name: str, url: str, pem_from: Path) -> None:
    """Record a host that labgpu cannot reach (as if it went down after `host add`)."""
    svc = hosts_env.services()
    certs = Path(hosts_env.overrides["state_dir"]) / "certs" / "hosts"
    certs.mkdir(parents=True, exist_ok=True)
    (certs / f"{name}.crt").write_text(pem_from.read_text())
    with svc.session() as session:
        session.add(Host(name=name, url=url, kind=HostKind.INCUS))


# serial: it measures the listing against a 2 s host timeout, which a machine busy with other tests overruns.
@pytest.mark.serial
def test_unreachable_hosts_do_not_hold_up_the_others(
    hosts_env: HostsEnv,
    test_daemons: dict[str, Daemon],
    hung_server: HungServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s1 = test_daemons["s1"]
    assert cli(capsys, "host", "add", "gpu-a", s1.url, "--token", s1.token())[0] == 0
    pinned = Path(hosts_env.overrides["state_dir"]) / "certs" / "hosts" / "gpu-a.crt"
    _add_fake_host(hosts_env, "hung", f"https://127.0.0.1:{hung_server.port}", pinned)
    with socket.socket() as probe:  # a port nobody listens on: refused at once
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    _add_fake_host(hosts_env, "down", f"https://127.0.0.1:{closed}", pinned)
    monkeypatch.setenv("LABGPU_HOST_TIMEOUT", "2")

    before = len(s1.instances())
    started = time.monotonic()
    hosts = {h["name"]: h for h in cli_json(capsys, "host", "list")}  # type: ignore[union-attr]
    elapsed = time.monotonic() - started
    after = len(s1.instances())
    assert elapsed < 4.5, f"host list took {elapsed:.1f}s with a 2s host timeout"
    assert hosts["gpu-a"]["reachable"] is True
    # Counted around the listing: another run may use the same test daemon meanwhile.
    assert hosts["gpu-a"]["containers"] in {before, after}
    assert hosts["hung"]["reachable"] is False
    assert hosts["hung"]["error"] == "no answer within 2s"
    assert hosts["down"]["reachable"] is False
    assert "cannot reach" in hosts["down"]["error"]
    assert hosts["down"]["seconds"] < 1.5

    # The table says so too, and the container list shows the hosts that answered.
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = cli(capsys, "host", "list")
    assert code == 0 and "unreachable" in out and "no answer within 2s" in out
    started = time.monotonic()
    rows = cli_json(capsys, "container", "list")
    assert time.monotonic() - started < 4.5
    assert isinstance(rows, list)
    assert {"host": "hung", "status": "unreachable"}.items() <= next(
        r for r in rows if r["host"] == "hung"
    ).items()
    on_a = {r["name"] for r in rows if r["host"] == "gpu-a"}
    assert on_a == set(s1.instances())


def test_drain_and_remove_with_members(
    hosts_env: HostsEnv, test_daemons: dict[str, Daemon], capsys: pytest.CaptureFixture[str]
) -> None:
    s1 = test_daemons["s1"]
    assert cli(capsys, "host", "add", "gpu-a", s1.url, "--token", s1.token())[0] == 0
    assert cli(capsys, "host", "drain", "gpu-a")[0] == 0
    hosts = {h["name"]: h for h in cli_json(capsys, "host", "list")}  # type: ignore[union-attr]
    assert hosts["gpu-a"]["drained"] is True
    assert cli(capsys, "host", "undrain", "gpu-a")[0] == 0
    assert cli(capsys, "host", "set", "gpu-a", "--public-address", "gpu-a.lab.example")[0] == 0
    hosts = {h["name"]: h for h in cli_json(capsys, "host", "list")}  # type: ignore[union-attr]
    assert hosts["gpu-a"]["drained"] is False and hosts["gpu-a"]["address"] == "gpu-a.lab.example"

    # A member living there (recorded only: no container) blocks `host rm`.
    svc = hosts_env.services()
    with svc.session() as session:
        host = session.scalars(select(Host).where(Host.name == "gpu-a")).one()
        session.add(
            Member(name="mhrm", uid=79990, host_id=host.id, container="mhrm", state=MemberState.RUNNING)
        )
    code, _, err = cli(capsys, "host", "rm", "gpu-a")
    assert code == 2 and "1 member(s) live on gpu-a: mhrm" in err
    code, out, err = cli(capsys, "host", "rm", "gpu-a", "--force")
    assert code == 0, err
    assert "unplaced member(s) mhrm" in out
    with svc.session() as session:
        member = session.scalars(select(Member).where(Member.name == "mhrm")).one()
        assert member.host_id is None and member.state == MemberState.PROVISIONING
        assert session.scalars(select(Host).where(Host.name == "gpu-a")).first() is None
    code, _, err = cli(capsys, "host", "rm", "gpu-a")
    assert code == 2 and "no host or cluster named gpu-a" in err
