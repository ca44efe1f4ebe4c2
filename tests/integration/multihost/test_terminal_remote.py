"""The terminal and the home's files in the browser for containers on other hosts: a standalone daemon
reached over HTTPS with labgpu's client certificate (s1), and a member of a cluster reached through the
cluster (c2, through c1).

The portal (uvicorn, in a thread) bridges the browser's WebSocket to that daemon's interactive exec, the
same way as for the local daemon: the member's shell runs as the container's user in that container (its
host name is the container's), the window size follows a resize, another member gets nothing, the open is
audited with the host, and closing the browser's side leaves no shell behind.
"""

from __future__ import annotations

import json
import secrets

import pytest

from labgpu.services.hosts._remote import add_host, set_drained
from labgpu.services.members._add import add_member, validate_request
from labgpu.services.portal import _accounts as accounts
from labgpu.services.portal import _audit as audit
from labgpu.store.models import Role
from labgpu.web.app import create_app
from tests.conftest import TEST_IMAGE_ALIASES, unique_name
from tests.integration.multihost.conftest import HostsEnv, local_host_name
from tests.integration.terminalutil import CSRF_RE, login, open_ws, read_until, serve, shells_left

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PASSWORD = "quiet-walnut-58-harbor"


@pytest.mark.parametrize("host", ["s1", "c2"])
def test_a_terminal_and_the_homes_files_for_a_container_on_another_host(
    hosts_env: HostsEnv, host: str
) -> None:
    d = hosts_env.daemons
    hosts_env.overrides.update(trusted_proxies="", jobs_in_serve="false")
    svc = hosts_env.services()
    if host == "s1":
        add_host(svc, "s1", d["s1"].url, token=d["s1"].token())
    else:
        add_host(svc, "lab", d["c1"].url, token=d["c1"].token())
    set_drained(svc, local_host_name(svc), True)
    name, other = unique_name("rt"), unique_name("ro")
    request = validate_request(svc, name=name, template=TEST_IMAGE_ALIASES["ssh"], host=host)
    container = add_member(svc, request, wait_ssh=False).container
    daemon = d["s1"] if host == "s1" else d["c1"]  # c1 answers for the cluster
    hosts_env.instances.append((daemon.name, container))
    accounts.set_password(svc, name=name, password=PASSWORD)
    accounts.create_account(svc, name=other, password=PASSWORD, role=Role.MEMBER)
    app = create_app(hosts_env.settings(), services=svc, background=False)

    with serve(app) as url:
        member = login(url, name, PASSWORD)
        with open_ws(url, name, member, cols=90, rows=25) as ws:
            ws.send(b"echo on-$(hostname)-as-$(id -un); stty size\n")
            shown = read_until(ws, b"25 90")
            assert f"on-{container}-as-ubuntu".encode() in shown, shown[-500:]
            ws.send(json.dumps({"type": "resize", "cols": 132, "rows": 43}))
            ws.send(b"stty size\n")
            read_until(ws, b"43 132")
        # Another member gets nothing.
        assert login(url, other, PASSWORD).get(f"/terminal/{name}").status_code == 404

        # The home's files in the browser work there too (the daemon's files API): up, listed, down.
        token = CSRF_RE.search(member.get("/me").text)
        assert token is not None
        body = secrets.token_bytes(3_000_000)
        put = member.put(
            f"/members/{name}/files/upload",
            params={"path": "", "filename": "数据.bin"},
            content=body,
            headers={"X-CSRF-Token": token.group(1)},
        )
        assert put.status_code == 200 and put.json()["size"] == len(body), put.text[:300]
        assert "数据.bin" in member.get(f"/members/{name}/files").text
        got = member.get(f"/members/{name}/files/download", params={"path": "数据.bin"})
        assert got.status_code == 200 and got.content == body
        home = hosts_env.settings().container_home.format(name=name)
        owner = daemon.client.instances.exec(container, ["stat", "-c", "%U", f"{home}/数据.bin"]).stdout
        assert owner.strip() == "ubuntu"

    opens = [e for e in audit.list_events(svc, limit=100) if e.action == "member.terminal"]
    assert [e.actor for e in opens] == [name]
    assert (opens[0].detail or {}).get("host") == host, opens[0].detail
    # The shell ended with the browser's side (it got SIGHUP): no runuser is left in that container.
    assert shells_left(daemon.client, container, timeout=20) == []
