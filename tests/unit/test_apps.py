"""Web apps and files without a daemon: the apps' definitions and the template keys that declare them, the safety
gate for their proxy devices, tickets and app cookies, and the apps origin's path and header rules (no path
out of an app's prefix, no labgpu cookie into an app, no labgpu cookie set by an app)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from labgpu.domain import apps as rules
from labgpu.domain.container import check_safe
from labgpu.errors import BadInput
from labgpu.services.apps import RateLimiter, Tickets
from labgpu.services.templates import SpecError
from labgpu.services.templates._spec_loading import parse_spec
from labgpu.services.templates._steps import HostBundle, guess_os_release, plan_steps
from labgpu.web.routes.apps import origin

ROOT = Path(__file__).resolve().parents[2]


def test_home_paths_never_leave_the_home() -> None:
    assert rules.home_path("/home/ubuntu", "") == "/home/ubuntu"
    assert rules.home_path("/home/ubuntu", "/runs//a/./b/") == "/home/ubuntu/runs/a/b"
    for bad in ("..", "a/../..", "a/..", "x\x00", "a\nb", "a\\b", "\x7f", "y" * 256):
        with pytest.raises(BadInput):
            rules.home_path("/home/ubuntu", bad)
    for bad in ("", ".", "..", "a/b", "a\tb"):
        with pytest.raises(BadInput):
            rules.file_name(bad)
    assert rules.file_name(" 数据.csv ") == "数据.csv"


def test_builtin_apps_get_their_base_url_and_no_token() -> None:
    jupyter = rules.BUILTIN_APPS["jupyterlab"]
    argv = jupyter.argv(base_url="/m/alice/jupyterlab/", home="/home/ubuntu")
    assert "--ServerApp.base_url=/m/alice/jupyterlab/" in argv
    assert "--IdentityProvider.token=" in argv and "--ServerApp.ip=127.0.0.1" in argv
    board = rules.BUILTIN_APPS["tensorboard"].argv(base_url="/m/alice/tensorboard/", home="/h")
    assert "--path_prefix=/m/alice/tensorboard" in board and "--host=127.0.0.1" in board
    code = rules.BUILTIN_APPS["code-server"]
    assert code.base_path == "strip" and "--auth=none" in code.argv(base_url="/x/", home="/h")


def test_apps_survive_the_image_property_and_bad_ones_are_dropped() -> None:
    apps = list(rules.BUILTIN_APPS.values())
    assert rules.decode_apps(rules.encode_apps(apps)) == apps
    assert rules.decode_apps("not json") == []
    assert rules.decode_apps('[{"name": "x", "port": 80, "command": ["a"]}]') == []  # a privileged port
    assert rules.decode_apps('[{"name": "x", "port": 9000, "command": "rm -rf /"}]') == []  # a shell string
    twice = rules.encode_apps([apps[0], apps[0]])
    assert rules.decode_apps(twice) == []


def _spec(extra: str) -> str:
    return "name: t1\nbase:\n  debootstrap:\n    suite: bookworm\n" + extra


def test_the_shipped_jupyter_template_plans_offline_steps() -> None:
    loaded = parse_spec(
        (ROOT / "templates" / "jupyter.yaml").read_text(), source="jupyter.yaml", spec_dir=None
    )
    assert [a.name for a in loaded.spec.apps] == ["jupyterlab", "code-server", "tensorboard"]
    steps = plan_steps(loaded, os_release=guess_os_release(loaded.spec), network=False)
    assert not [s.name for s in steps if s.needs_network]  # builds without a network in the builder
    bundles = [a for s in steps for a in s.actions if isinstance(a, HostBundle)]
    assert [b.kind for b in bundles] == ["pip", "npm"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ("apps: [jupyter]\n", "unknown app"),
        ("apps: [{name: xy, port: 9000, command: 'rm -rf /'}]\n", "list of arguments"),
        ("apps: [{name: xy, port: 22, command: [a]}]\n", "port"),
        ("apps: [{name: xy, port: 9000, base_path: up, command: [a]}]\n", "base_path"),
        ("apps: [jupyterlab, {name: jupyterlab, port: 9000, command: [a]}]\n", "same name"),
        ("pip: {packages: ['x; rm -rf /']}\n", "invalid requirement"),
        ("pip: {packages: [x], venv: ../v}\n", "absolute path"),
        ("npm: {packages: [code-server], node: latest}\n", "node must be"),
        ("npm: {packages: ['$(id)'], node: '24.1.0'}\n", "invalid npm package"),
    ],
)
def test_bad_app_and_package_keys_are_refused_with_their_line(extra: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_spec(extra), source="t.yaml", spec_dir=None)
    assert words in str(info.value), str(info.value)


def test_an_app_socket_passes_the_safety_gate_only_in_labgpus_folder() -> None:
    good = {
        "type": "proxy",
        "listen": "unix:/var/lib/labgpu/apps/ab.sock",
        "connect": "tcp:127.0.0.1:18888",
        "bind": "host",
        "mode": "0600",
    }
    check_safe({}, {"app-x": good}, allowed_roots=[], app_socket_dir="/var/lib/labgpu/apps")
    bad = [
        {**good, "listen": "unix:/run/lxd.socket"},
        {**good, "listen": "unix:/var/lib/labgpu/apps/../x.sock"},
        {**good, "mode": "0666"},
        {**good, "connect": "tcp:10.0.0.1:22"},
        {**good, "connect": "unix:/var/lib/lxd/unix.socket"},
        {**good, "bind": "instance"},
    ]
    for device in bad:
        with pytest.raises(BadInput):
            check_safe({}, {"app-x": device}, allowed_roots=[], app_socket_dir="/var/lib/labgpu/apps")
    with pytest.raises(BadInput):  # without the folder (every other path) no unix listener at all
        check_safe({}, {"app-x": good}, allowed_roots=[])


def test_tickets_are_used_once_and_cookies_are_not_tickets() -> None:
    tickets = Tickets("k" * 40)
    ticket = tickets.issue(account="bob", is_admin=True, session_id="s1", member="alice", app="jupyterlab")
    grant = tickets.redeem(ticket)
    assert (
        grant is not None and grant.allows("alice", "jupyterlab") and not grant.allows("alice", "tensorboard")
    )
    assert tickets.redeem(ticket) is None  # once
    cookie = tickets.cookie(grant, seconds=60)
    assert tickets.read_cookie(cookie) == tickets.read_cookie(cookie) is not None
    assert tickets.redeem(cookie) is None and tickets.read_cookie(ticket) is None  # purposes apart
    assert Tickets("other" * 10).read_cookie(cookie) is None
    payload, signature = cookie.split(".")
    assert tickets.read_cookie(payload + "." + "0" * len(signature)) is None
    expired = tickets.cookie(grant, seconds=-1)
    assert tickets.read_cookie(expired) is None


def test_the_rate_limiter_counts_per_key() -> None:
    limiter = RateLimiter(3)
    assert [limiter.allow("a") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b")


def test_the_proxy_keeps_requests_inside_the_apps_prefix() -> None:
    assert origin._parse("/m/alice/jupyterlab/lab/tree") == ("alice", "jupyterlab", "/lab/tree")
    assert origin._parse("/m/alice/jupyterlab") == ("alice", "jupyterlab", "/")
    for bad in (
        "/m/alice/jupyterlab/../../bob/jupyterlab/",
        "/m/Alice/x/",
        "/m/alice/x/a\\b",
        "/x",
        "/m/a/b/./c",
    ):
        assert origin._parse(bad) is None, bad
    prefix = rules.BUILTIN_APPS["jupyterlab"]
    target = type("T", (), {"app": prefix, "base_url": "/m/alice/jupyterlab/"})()
    assert origin._upstream_path(target, "/m/alice/jupyterlab/api?x=1") == "/m/alice/jupyterlab/api?x=1"
    assert origin._upstream_path(target, "/m/alice/jupyterlab/%2e%2e/x") is None
    assert origin._upstream_path(target, "/m/alice/jupyterlab/a%2Fb") is None
    strip = type("T", (), {"app": rules.BUILTIN_APPS["code-server"], "base_url": "/m/alice/code-server/"})()
    assert origin._upstream_path(strip, "/m/alice/code-server/static/x.js") == "/static/x.js"
    assert origin._upstream_path(strip, "/m/alice/code-server") == "/"


def test_labgpus_cookies_never_reach_an_app_and_an_app_cannot_set_them() -> None:
    cookies = {"labgpu_session": "s", "labgpu_csrf": "c", "labgpu_app": "a", "LABGPU_x": "y", "_xsrf": "j"}
    assert origin._cookie_header(cookies) == "_xsrf=j"
    headers = origin._forward_headers(
        httpx.Headers({"Authorization": "Bearer lgp_secret", "X-Other": "1", "Cookie": "labgpu_session=s"}),
        cookies,
        origin.HOP_HEADERS,
    )
    assert ("x-other", "1") in headers and ("cookie", "_xsrf=j") in headers
    assert not [h for h in headers if h[0] == "authorization"]
    answer = httpx.Headers(
        [("set-cookie", "labgpu_session=evil; Path=/"), ("set-cookie", "_xsrf=1; Path=/m/a/j/"), ("x-a", "b")]
    )
    out = dict(origin._response_headers(answer))
    assert out[b"set-cookie"] == b"_xsrf=1; Path=/m/a/j/" and out[b"x-a"] == b"b"


def test_grants_expire() -> None:
    tickets = Tickets("k" * 40)
    grant = tickets.redeem(tickets.issue(account="a", is_admin=False, session_id="s", member="a", app="x1"))
    assert grant is not None and grant.expires > time.time()
