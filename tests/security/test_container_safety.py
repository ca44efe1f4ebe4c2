"""No code path makes a privileged or nested container, adds raw LXC config, or mounts a host folder outside
the configured roots (the homes base and the shares), whatever a member or an admin typed.

- Property tests drive the spec builder every path uses (``container_spec``: add, reset, set,
  reconcile, moves) with hostile input through the same validators the CLI and the API call, and check the
  result on its own terms (not only through check_safe), then that check_safe accepts it.
- Property tests inject each way to weaken isolation into a good spec and check that check_safe refuses it.
- check_safe runs before any request: a refused spec sends nothing that changes the daemon.
- Every place in src/ that creates or changes an instance or a profile calls check_safe, or is listed here
  with the reason it needs none; a new one fails until it does either.
"""

from __future__ import annotations

import ast
import json
import posixpath
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from labgpu.domain.container import CONTAINER_PORTS, ContainerSpec, PortSpec, ShareSpec, check_safe
from labgpu.domain.shares import FORBIDDEN_SOURCES, check_share_path, check_share_source, validate_share_name
from labgpu.errors import BadInput
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.services.context import Actor, Services
from labgpu.services.members import _moves as moves
from labgpu.services.members._add import validate_request
from labgpu.services.members._provision import ensure_container
from labgpu.services.members._records import container_spec
from labgpu.settings import Settings, load_settings
from labgpu.store.models import Member, PortMap, PortPurpose, Share

SRC = Path(__file__).resolve().parents[2] / "src" / "labgpu"
HOME_BASE = "/srv/labgpu/home"
STATE_DIR = "/var/lib/labgpu"
HOST_GPUS = {0: "0000:01:00.0", 1: "0000:02:00.0"}
PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# What people type, and what attackers type: traversal, newlines (raw.idmap and labels are line-based),
# shell metacharacters, NUL, look-alike prefixes of the allowed roots.
HOSTILE = [
    "..",
    "../../etc",
    "/srv/labgpu/home/../../etc",
    "/srv/labgpu/home-evil",
    "/srv/labgpu/homeevil/x",
    "/etc/shadow",
    "/",
    "//etc",
    "/var/lib/lxd/unix.socket",
    "/var/lib/incus",
    "/var/lib/labgpu/secret_key",
    "/proc/1/root",
    "/data/./../etc",
    "alice\nboth 0 0",
    "x\nraw.lxc=lxc.apparmor.profile=unconfined",
    "$(reboot)",
    "`id`",
    "a;rm -rf /",
    "a|sh",
    "a&&b",
    "a b",
    "a\x00b",
    "~root",
    "*",
    "alice\r\n",
    "alice\n",
    "cuda-12.4\n",
    "ALICE",
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(alphabet=st.sampled_from(list("ab1-_./\\;|&$`()'\" \n\r\t\x00*~")), max_size=30),
    st.text(max_size=30),
)


def mostly(good: st.SearchStrategy[str], bad: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Three in four from ``good`` (so the builder itself gets exercised), the rest from ``bad``."""
    return st.integers(min_value=0, max_value=3).flatmap(lambda i: bad if i == 0 else good)


good_names = st.from_regex(r"[a-z][a-z0-9]{1,10}(-[a-z0-9]{1,8})?", fullmatch=True)
member_names = mostly(good_names, hostile_text)
good_sources = st.from_regex(r"/(data|opt|srv/datasets|mnt/nas)(/[a-z0-9._-]{1,12}){0,3}", fullmatch=True)
share_sources = mostly(
    good_sources,
    st.one_of(
        st.builds(
            lambda root, rest: root + rest,
            st.sampled_from([*FORBIDDEN_SOURCES, HOME_BASE, "/"]),
            hostile_text,
        ),
        hostile_text,
    ),
)
good_paths = st.from_regex(r"/(data|opt/matlab|usr/local/cuda-12)(/[a-z0-9._-]{1,12}){0,2}", fullmatch=True)
share_paths = mostly(good_paths, hostile_text)
share_names = mostly(st.sampled_from(["cuda-12.4", "imagenet", "matlab_r2024a"]), hostile_text)
limits = mostly(
    st.one_of(st.none(), st.sampled_from(["8GiB", "512MiB", "1.5TiB", "64G"])),
    st.one_of(st.sampled_from(["0", "-1", "1e9", "8GiB\\n", "8GiB; reboot"]), hostile_text),
)
gpu_text = mostly(st.sampled_from(["all", "none", "0", "1,0", "0,7", "99"]), hostile_text)


@pytest.fixture(scope="module")
def lab_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    state = tmp_path_factory.mktemp("state")
    return load_settings(state_dir=str(state), home_base=HOME_BASE, runtime_url="unix:///nonexistent.sock")


def _services(lab_settings: Settings) -> Services:
    # container_spec reads only the settings; it gets the host's GPUs as an argument.
    return Services(settings=lab_settings, runtime=None, sessions=None, actor=Actor("test"))  # type: ignore[arg-type]


def _accepted(check, *args: object, **kwargs: object) -> object | None:  # type: ignore[no-untyped-def]
    """The validator's result, or None when it refused with BadInput (a clear message, one line)."""
    try:
        return check(*args, **kwargs)
    except BadInput as exc:
        assert exc.message and "\n" not in exc.message.strip() and "Traceback" not in exc.message
        return None


def _inside(path: str, root: str) -> bool:
    p, r = PurePosixPath(path), PurePosixPath(root)
    return p == r or r in p.parents


def assert_isolated(spec: ContainerSpec, *, share_sources: list[str]) -> None:
    """What a member's container must never have, checked on the spec itself (check_safe is checked too)."""
    config, devices = spec.config(), spec.devices()
    truthy = {"true", "1", "yes", "on"}
    assert config.get("security.privileged", "false").lower() not in truthy
    assert config.get("security.nesting", "false").lower() not in truthy
    assert not [k for k in config if k.startswith("raw.") and k != "raw.idmap"]
    # One member uid, mapped to the container user: exactly these two lines, whatever the input.
    assert config["raw.idmap"] == f"uid {spec.host_uid} 1000\ngid {spec.host_uid} 1000"
    assert spec.host_uid >= 1000
    for key, value in config.items():
        assert key == "raw.idmap" or ("\n" not in value and "\r" not in value), (key, value)
    for name, dev in devices.items():
        assert dev["type"] in ("disk", "proxy", "gpu"), (name, dev)
        assert all(value.isprintable() for value in dev.values()), (name, dev)
        if dev["type"] == "disk" and dev["path"] != "/":
            source = dev["source"]
            assert source.startswith("/") and ".." not in PurePosixPath(source).parts
            assert posixpath.normpath(source) == source
            assert _inside(source, HOME_BASE) or source in share_sources, (name, source)
            assert source != "/"
            for forbidden in (*FORBIDDEN_SOURCES, STATE_DIR):
                if source in share_sources:
                    assert not _inside(source, forbidden) and not _inside(forbidden, source), (
                        source,
                        forbidden,
                    )
        if dev["type"] == "disk" and dev["path"] == "/":
            assert "source" not in dev
        if dev["type"] == "proxy":
            assert dev["bind"] == "host"
            assert re.fullmatch(r"tcp:127\.0\.0\.1:(22|3389|5901)", dev["connect"]), dev
    home = devices["labgpu-home"]
    assert PurePosixPath(home["source"]).parent == PurePosixPath(HOME_BASE)
    check_safe(config, devices, allowed_roots=[HOME_BASE, *share_sources])


@PROPERTY
@given(
    name=member_names,
    uid_offset=st.integers(min_value=0, max_value=9999),
    template=st.one_of(st.none(), st.just("labgpu-minimal/20260101-1"), hostile_text),
    memory=limits,
    disk=limits,
    gpus=gpu_text,
    shares=st.lists(st.tuples(share_names, share_sources, share_paths), max_size=4),
    rdp=st.booleans(),
)
# The trailing newline that `^...$` lets through, in each name that reaches a label, a path or raw.idmap.
@example("alice\n", 0, None, None, None, "all", [], False)
@example("alice", 0, "labgpu-minimal\n", None, None, "all", [], False)
@example("alice", 0, None, None, None, "all", [("cuda-12.4\n", "/opt/cuda", "/usr/local/cuda-12")], False)
@example("alice", 0, None, None, None, "all", [("cuda", "/opt/cuda\n", "/usr/local/cuda-12")], False)
@example("alice", 0, None, None, None, "all", [("cuda", "/opt/cuda/../../etc", "/usr/local/cuda-12")], True)
def test_every_spec_labgpu_builds_from_any_input_is_isolated(
    lab_settings: Settings,
    name: str,
    uid_offset: int,
    template: str | None,
    memory: str | None,
    disk: str | None,
    gpus: str,
    shares: list[tuple[str, str, str]],
    rdp: bool,
) -> None:
    svc = _services(lab_settings)
    # The validators `share add` (CLI and API) runs, then those of `member add` and of an approval.
    private = [STATE_DIR, HOME_BASE, "/srv/labgpu/archive"]
    rows: dict[str, Share] = {}
    for share_name, source, path in shares:
        checked = (
            _accepted(validate_share_name, share_name),
            _accepted(check_share_source, source, real_path=posixpath.normpath(source), private=private),
            _accepted(check_share_path, path),
        )
        if None not in checked:
            rows[share_name] = Share(name=checked[0], source=checked[1], path=checked[2], readonly=True)
    request = _accepted(
        validate_request,
        svc,
        name=name,
        template=template,
        memory=memory,
        disk=disk,
        gpus=gpus,
        shares=list(rows),
        rdp=rdp,
    )
    if request is None:
        event("request refused")
        return
    event(f"spec built with {len(rows)} share(s)")
    member = Member(
        name=request.name,
        uid=lab_settings.uid_base + uid_offset,
        container=request.name,
        template=request.template,
        memory_limit_bytes=request.memory_bytes,
        disk_size_bytes=request.disk_bytes,
        gpu_spec=str(request.gpus),
        spec_version=1,
    )
    member.port_maps = [
        PortMap(purpose=PortPurpose(p), listen_address="0.0.0.0", host_port=22000 + i, container_port=port)
        for i, (p, port) in enumerate(CONTAINER_PORTS.items())
        if p in request.purposes
    ]
    member.shares = [rows[n] for n in request.shares]
    spec = container_spec(svc, member, gpus_on_host=HOST_GPUS)
    sources = [s.source for s in member.shares]
    assert_isolated(spec, share_sources=sources)
    # The spec a move puts on the new host is the same spec with the new host's ports.
    assert_isolated(moves._spec_with_ports(spec, {"ssh": 23000}, "10.0.0.2"), share_sources=sources)


def _good() -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    spec = ContainerSpec(
        name="alice",
        owner="alice",
        template="labgpu-minimal",
        profile="labgpu",
        host_uid=70001,
        home_source=f"{HOME_BASE}/alice",
        home_path="/home/ubuntu/alice",
        ports=(PortSpec("ssh", "0.0.0.0", 22000, 22),),
        shares=(ShareSpec("data", "/data/imagenet", "/data"),),
    )
    return spec.config(), spec.devices()


def _case_variants(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flags: "".join(c.upper() if f else c for c, f in zip(word, flags, strict=True))
    )


truthy = st.one_of(*(_case_variants(w) for w in ("true", "yes", "on")), st.just("1"))
bad_config = st.one_of(
    st.tuples(st.just("security.privileged"), truthy),
    st.tuples(st.just("security.nesting"), truthy),
    st.tuples(
        st.sampled_from(
            ["raw.lxc", "raw.apparmor", "raw.seccomp", "raw.qemu", "raw.qemu.conf", "security.idmap.base"]
        ),
        st.text(max_size=40),
    ),
    st.tuples(
        st.just("raw.idmap"),
        st.sampled_from(
            [
                "both 0 0",
                "uid 0 0",
                "uid 70001 1000\nboth 0 0",
                "uid 70001 1000\ngid 70001 1000\nuid 0 1001",
                "uid 100000-165535 0-65535",
                "uid 70001 1000; both 0 0",
                "uid 999 1000",
                "both 70001",
            ]
        ),
    ),
)
outside_sources = st.one_of(
    st.sampled_from(
        ["/etc", "/", "/root/.ssh", "/var/lib/lxd", "/srv/labgpu/home-evil", "/srv/labgpu", "/data"]
    ),
    st.builds(lambda rest: f"{HOME_BASE}/../{rest}", st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
    st.builds(lambda rest: f"/data/imagenet/../../{rest}", st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
    st.from_regex(r"[a-z][a-z/]{0,20}", fullmatch=True),  # relative: the daemon would take it as a volume
)
bad_device = st.one_of(
    st.builds(lambda s: {"type": "disk", "source": s, "path": "/mnt/x"}, outside_sources),
    st.builds(
        lambda s: {"type": "disk", "source": s, "path": "/"},
        st.sampled_from(["/", HOME_BASE, "/data/imagenet"]),
    ),
    st.builds(
        lambda t: {"type": t, "path": "/dev/x"},
        st.sampled_from(["unix-char", "unix-block", "unix-hotplug", "usb", "pci", "infiniband"]),
    ),
    st.builds(
        lambda c: {"type": "proxy", "listen": "tcp:0.0.0.0:22100", "connect": c, "bind": "host"},
        st.sampled_from(["unix:/var/lib/lxd/unix.socket", "unix:/run/docker.sock", "unix:@abstract"]),
    ),
    st.builds(
        lambda b: {
            "type": "proxy",
            "listen": "tcp:127.0.0.1:8443",
            "connect": "tcp:127.0.0.1:8443",
            "bind": b,
        },
        st.sampled_from(["instance", "container", "Instance"]),
    ),
)


@PROPERTY
@given(bad=bad_config)
def test_check_safe_refuses_every_config_that_weakens_isolation(bad: tuple[str, str]) -> None:
    config, devices = _good()
    key, value = bad
    with pytest.raises(BadInput, match="refused"):
        check_safe({**config, key: value}, devices, allowed_roots=[HOME_BASE, "/data/imagenet"])


@PROPERTY
@given(device=bad_device, name=st.sampled_from(["share-data", "labgpu-home", "root", "x"]))
def test_check_safe_refuses_every_device_that_reaches_the_host(device: dict[str, str], name: str) -> None:
    config, devices = _good()
    with pytest.raises(BadInput, match="refused"):
        check_safe(config, {**devices, name: device}, allowed_roots=[HOME_BASE, "/data/imagenet"])


def test_the_good_spec_passes() -> None:
    """The other two tests mean something only if check_safe accepts what labgpu really builds."""
    config, devices = _good()
    check_safe(config, devices, allowed_roots=[HOME_BASE, "/data/imagenet"])


# Before any request -------------------------------------------------------------------------------


class RecordingDaemon:
    """A daemon (over httpx's mock transport) that knows no instance and records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        if request.url.path == "/1.0":
            meta = {"api_extensions": [], "environment": {"server": "lxd"}}
            return httpx.Response(200, json={"type": "sync", "metadata": meta})
        if request.method == "GET" and request.url.path.startswith("/1.0/instances/"):
            inst = {
                "name": "alice",
                "status": "Stopped",
                "type": "container",
                "config": {"user.labgpu.owner": "alice"},
                "devices": {},
                "profiles": ["labgpu"],
            }
            if request.url.path.endswith("/missing"):
                return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})
            return httpx.Response(200, json={"type": "sync", "metadata": inst})
        if request.url.path.startswith("/1.0/images/aliases/"):
            return httpx.Response(200, json={"type": "sync", "metadata": {"target": "f" * 64}})
        if request.method == "POST":
            return httpx.Response(202, json={"type": "async", "metadata": {"id": "op1"}})
        if request.url.path == "/1.0/operations/op1/wait":
            return httpx.Response(200, json={"type": "sync", "metadata": {"status": "Success"}})
        return httpx.Response(200, json={"type": "sync", "metadata": {}})

    def client(self) -> RuntimeClient:
        client = RuntimeClient(Endpoint.unix(Path("/nonexistent.sock")))
        client._http = httpx.Client(transport=httpx.MockTransport(self.handler), base_url="http://runtime")
        return client

    @property
    def changes(self) -> list[tuple[str, str]]:
        return [r for r in self.requests if r[0] not in ("GET", "HEAD")]


def _tampered_spec(name: str) -> ContainerSpec:
    """A spec from a store row someone edited by hand: a share whose source is /etc."""
    return ContainerSpec(
        name=name,
        owner="alice",
        template="labgpu-minimal",
        profile="labgpu",
        host_uid=70001,
        home_source=f"{HOME_BASE}/alice",
        home_path="/home/ubuntu/alice",
        shares=(ShareSpec("etc", "/etc", "/mnt/etc"),),
    )


def test_a_refused_spec_never_reaches_the_daemon(lab_settings: Settings) -> None:
    daemon = RecordingDaemon()
    svc = Services(settings=lab_settings, runtime=daemon.client(), sessions=None, actor=Actor("t"))  # type: ignore[arg-type]
    with pytest.raises(BadInput, match="outside the allowed host folders"):
        ensure_container(svc, _tampered_spec("missing"), [HOME_BASE])
    # The spec a move or the recovery of an interrupted move puts on a container.
    with pytest.raises(BadInput, match="outside the allowed host folders"):
        moves.put_spec(daemon.client(), "alice", _tampered_spec("alice"), roots=[HOME_BASE])
    assert daemon.changes == []
    # And a good spec does reach it (the recording daemon is not simply deaf).
    ensure_container(svc, _tampered_spec("missing"), [HOME_BASE, "/etc"])
    assert daemon.changes and daemon.changes[0] == ("POST", "/1.0/instances")


# Every call that creates or changes an instance or a profile ---------------------------------------

MUTATING = {"create", "update", "replace"}
# (module, function) -> why it needs no check_safe of its own.
NO_CHECK_NEEDED = {
    ("services/gpus/_modes.py", "ensure_passthrough"): "sets only passthrough_config(): nvidia.runtime",
    ("services/hosts/_setup.py", "_step_profile"): "labgpu_profile() is constant; merged_profile drops "
    "security.privileged (tests/unit/test_host_setup_profile.py)",
    ("services/ops/_reconcile.py", "update"): "a closure inside _repair_drift, which calls check_safe first",
    (
        "services/members/_shares.py",
        "remove_share",
    ): "removes one share device from the profile, adds nothing",
    ("services/templates/_build.py", "start_builder"): "an admin's builder: constant labels, a root disk and "
    "a NIC, no profile, deleted when the build ends",
    (
        "services/members/_moves.py",
        "_transfer",
    ): "copies the spec plan_move checked (check_safe before the plan); "
    "its cluster branch goes through put_spec",
    ("services/members/_moves.py", "_drop_app_devices"): "removes the web apps' proxy devices, adds nothing",
}


def _mutating_calls() -> Iterator[tuple[str, str, int]]:
    """(module, enclosing function, line) of every instances/profiles create/update/replace and
    copy_instance call outside the runtime layer."""
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("runtime/"):
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                runtime_call = (
                    isinstance(f, ast.Attribute)
                    and f.attr in MUTATING
                    and isinstance(f.value, ast.Attribute)
                    and f.value.attr in ("instances", "profiles")
                )
                copy_call = isinstance(f, ast.Name) and f.id == "copy_instance"
                if runtime_call or copy_call:
                    yield rel, fn.name, node.lineno


def _calls_check_safe(module: str, function: str) -> bool:
    tree = ast.parse((SRC / module).read_text())
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and fn.name == function:
            return any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "check_safe"
                for n in ast.walk(fn)
            )
    return False


def test_every_call_that_changes_an_instance_or_a_profile_is_checked() -> None:
    calls = list(_mutating_calls())
    assert len(calls) >= 8, calls  # the walk finds them (ensure_container, lifecycle, moves...)
    unchecked = sorted(
        f"{module}:{line} in {function}()"
        for module, function, line in calls
        if not _calls_check_safe(module, function) and (module, function) not in NO_CHECK_NEEDED
    )
    assert unchecked == [], "call check_safe first, or say in NO_CHECK_NEEDED why it needs none"
    stale = set(NO_CHECK_NEEDED) - {(m, f) for m, f, _ in calls}
    assert stale == set(), "NO_CHECK_NEEDED names functions that no longer change anything"


def test_no_code_writes_the_keys_that_break_isolation() -> None:
    """The keys appear only where they are refused (check_safe, the profile's forbidden list)."""
    allowed = {"domain/container.py", "services/hosts/_profile.py"}
    pattern = re.compile(r"security\.privileged|security\.nesting|raw\.(lxc|apparmor|seccomp|qemu)")
    found = sorted(
        path.relative_to(SRC).as_posix()
        for path in SRC.rglob("*")
        if path.suffix in (".py", ".yaml", ".j2", ".sh", ".toml")
        and pattern.search(path.read_text(errors="replace"))
    )
    assert set(found) <= allowed, found
    text = (SRC / "services" / "hosts" / "_profile.py").read_text()
    assert 'FORBIDDEN_PROFILE_CONFIG = {"security.privileged": "true"}' in text


def test_the_daemon_sees_only_json_never_a_command_line(lab_settings: Settings) -> None:
    """Names reach LXD as JSON values of the create request, so a name cannot add a key or a device."""
    daemon = RecordingDaemon()
    sent: list[dict[str, object]] = []
    original = daemon.handler

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            sent.append(json.loads(request.content))
        return original(request)

    client = RuntimeClient(Endpoint.unix(Path("/nonexistent.sock")))
    client._http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://runtime")
    svc = Services(settings=lab_settings, runtime=client, sessions=None, actor=Actor("t"))  # type: ignore[arg-type]
    spec = ContainerSpec(
        name="missing",
        owner="alice",
        template='labgpu-minimal", "security.privileged": "true',
        profile="labgpu",
        host_uid=70001,
        home_source=f"{HOME_BASE}/alice",
        home_path="/home/ubuntu/alice",
    )
    ensure_container(svc, spec, [HOME_BASE])
    (body,) = sent
    assert "security.privileged" not in body["config"]  # type: ignore[operator]
    assert body["config"]["user.labgpu.template"] == spec.template  # type: ignore[index]
