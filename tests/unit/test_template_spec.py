"""Template specs without a daemon: validation with line numbers, the build plan they give, versions,
the request a server-image base sends, the image export splitter, and how the CLI shows failures."""

from __future__ import annotations

import io
import json
import random
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from labgpu.cli.main import run
from labgpu.runtime.client import RuntimeClient
from labgpu.runtime.endpoint import Endpoint
from labgpu.runtime.images import RemoteImage, split_multipart
from labgpu.services.templates._build import Builder, base_recipe, check_network
from labgpu.services.templates._build_report import BuildReporter, TemplateBuildError
from labgpu.services.templates._catalog import next_version, parse_ref, version_key
from labgpu.services.templates._spec import SpecError
from labgpu.services.templates._spec_loading import LoadedSpec, load_spec, parse_spec
from labgpu.services.templates._steps import (
    SSHD_DROPIN,
    VNC_UNIT,
    OsRelease,
    Push,
    Run,
    apt_sources,
    guess_os_release,
    plan_steps,
)

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "templates").glob("*.yaml"))
BOOKWORM = OsRelease(id="debian", codename="bookworm")
NOBLE = OsRelease(id="ubuntu", codename="noble", id_like=("debian",))


def spec(text: str, tmp_path: Path | None = None) -> LoadedSpec:
    return parse_spec(text, source="x.yaml", spec_dir=tmp_path)


def problems(text: str, tmp_path: Path | None = None) -> list[str]:
    with pytest.raises(SpecError) as failed:
        spec(text, tmp_path)
    return failed.value.lines


def actions(
    loaded: LoadedSpec, step: str, *, os_release: OsRelease = BOOKWORM, network: bool = True
) -> list[Any]:
    found = [s for s in plan_steps(loaded, os_release=os_release, network=network) if s.name == step]
    assert found, f"no step {step}"
    return list(found[0].actions)


def argvs(loaded: LoadedSpec, step: str, **kw: Any) -> list[tuple[str, ...]]:
    return [a.argv for a in actions(loaded, step, **kw) if isinstance(a, Run)]


# The shipped specs ---------------------------------------------------------------------------------


def test_the_example_specs_are_shipped() -> None:
    assert [p.stem for p in SHIPPED] == ["cuda-dev", "desktop", "jupyter", "minimal"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_specs_validate(path: Path) -> None:
    loaded = load_spec(path)
    assert loaded.spec.name == path.stem
    assert loaded.spec.base.debootstrap is not None
    assert plan_steps(loaded, os_release=BOOKWORM, network=True)


def test_minimal_builds_without_a_network_in_the_builder() -> None:
    loaded = load_spec(ROOT / "templates" / "minimal.yaml")
    steps = plan_steps(loaded, os_release=BOOKWORM, network=False)
    assert [s.name for s in steps] == ["user", "sshd", "clean"]
    check_network(steps, None)  # nothing needs apt inside the builder


def test_a_spec_that_needs_apt_is_refused_without_a_network_before_building() -> None:
    loaded = load_spec(ROOT / "templates" / "cuda-dev.yaml")
    steps = plan_steps(loaded, os_release=BOOKWORM, network=False)
    with pytest.raises(
        Exception, match="packages, gcc install packages with apt inside the builder"
    ) as failed:
        check_network(steps, None)
    assert getattr(failed.value, "is_bad_input", False)
    check_network(steps, "labgpubr0")


# Validation with line numbers ----------------------------------------------------------------------

GOOD = "name: demo\nbase:\n  debootstrap: {}\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "pakages: [vim]\n", "x.yaml:4: unknown key 'pakages' (did you mean 'packages'?)"),
        (
            "name: demo\nbase:\n  debootstrap:\n    suite: bookworm\n    varient: minbase\n",
            "x.yaml:5: unknown key 'varient' in base.debootstrap (did you mean 'variant'?)",
        ),
        (GOOD + "packages: vim\n", "x.yaml:4: packages: should be a list, not a string"),
        (GOOD + "user:\n  uid: '1000'\n", "x.yaml:5: user.uid: should be a whole number, not a string"),
        (
            GOOD + "ssh:\n  password_authentication: 'yes'\n",
            "x.yaml:5: ssh.password_authentication: should be true or false",
        ),
        ("name: demo\ndescription: x\n", "x.yaml:1: missing key 'base'"),
        (
            "name: demo\nbase: {}\n",
            "x.yaml:2: base: give exactly one of 'image' (REMOTE:ALIAS) and 'debootstrap'",
        ),
        ("name: demo\nbase:\n  image: debian/12\n", "x.yaml:3: base.image: image must be REMOTE:ALIAS"),
        ("name: demo\nbase:\n  image: tuna:debian/12\n", "x.yaml:2: base: unknown remote 'tuna'"),
        ("name: Demo\nbase:\n  debootstrap: {}\n", "x.yaml:1: name: invalid template name 'Demo'"),
        (
            GOOD + "desktop:\n  environment: kde\n",
            "x.yaml:5: desktop.environment: should be 'xfce' or 'lxde'",
        ),
        (GOOD + "desktop:\n  xrdp: false\n", "x.yaml:4: desktop: a desktop needs xrdp, vnc or both"),
        (
            GOOD + "gcc:\n  versions: [11, 12]\n  default: 10\n",
            "x.yaml:4: gcc: default 10 is not one of the versions",
        ),
        (GOOD + "gcc:\n  versions: []\n", "x.yaml:5: gcc.versions: must not be empty"),
        (
            GOOD + "commands:\n  - apt-get install vim\n",
            "x.yaml:5: commands[0]: a command is a list of arguments",
        ),
        (
            GOOD + "commands:\n  - [echo, ok]\n  - [echo, 3]\n",
            "x.yaml:6: commands[1][1]: should be a string, not a number (3)",
        ),
        (
            GOOD + "commands:\n  - {scrpt: x.sh}\n",
            "x.yaml:5: unknown key 'scrpt' in commands[0] (did you mean 'script'?)",
        ),
        (
            GOOD + "files:\n  - {src: a, dest: /etc/a, mode: 0644}\n",
            "x.yaml:5: files[0].mode: write the mode as a quoted string",
        ),
        (
            GOOD + "files:\n  - {src: a, dest: etc/a}\n",
            "x.yaml:5: files[0].dest: dest must be an absolute path",
        ),
        (GOOD + "environment:\n  1BAD: x\n", "x.yaml:4: environment: invalid variable name '1BAD'"),
        (
            GOOD + "environment:\n  PROXY: 3128\n",
            "x.yaml:5: environment.PROXY: should be a string, not a number (3128)",
        ),
        (GOOD + "name: again\n", "x.yaml:4: key 'name' is given twice"),
        ("name: [demo\n", "x.yaml:2: not valid YAML"),
        ("", "x.yaml:1: the spec is empty"),
        ("- name: demo\n", "x.yaml:1: a spec is a mapping of keys"),
    ],
)
def test_problems_name_their_line(text: str, expected: str) -> None:
    found = problems(text)
    assert any(line.startswith(expected) for line in found), found


def test_every_problem_is_reported_and_the_message_is_one_line() -> None:
    with pytest.raises(SpecError) as failed:
        spec(GOOD + "pakages: [vim]\nuser:\n  uid: '1'\n")
    error = failed.value
    assert error.is_bad_input
    assert [line.split(":")[1] for line in error.lines] == ["4", "6"]
    assert "\n" not in error.message
    assert error.message.startswith("x.yaml:4: unknown key 'pakages'") and error.message.endswith(
        "(and 1 more problem)"
    )


def test_files_and_scripts_must_exist_beside_the_spec(tmp_path: Path) -> None:
    text = GOOD + "files:\n  - {src: motd, dest: /etc/motd}\ncommands:\n  - {script: setup.sh}\n"
    found = problems(text, tmp_path)
    assert found[0].startswith("x.yaml:5: files[0].src: src 'motd' does not exist")
    assert found[1].startswith("x.yaml:7: commands[0].script: script 'setup.sh' does not exist")
    (tmp_path / "motd").write_text("hello\n")
    (tmp_path / "setup.sh").write_text("echo no shebang\n")
    assert problems(text, tmp_path) == [
        "x.yaml:7: commands[0].script: script 'setup.sh' must start with a #! line (e.g. #!/bin/sh)"
    ]
    (tmp_path / "setup.sh").write_text("#!/bin/sh\necho hi\n")
    assert spec(text, tmp_path).spec.commands


def test_a_missing_spec_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist") as failed:
        load_spec(tmp_path / "nope.yaml")
    assert getattr(failed.value, "is_bad_input", False)


def test_spec_hash_follows_content_not_layout(tmp_path: Path) -> None:
    (tmp_path / "s.sh").write_text("#!/bin/sh\necho 1\n")
    text = GOOD + "commands:\n  - {script: s.sh}\n"
    first = spec(text, tmp_path).spec_hash()
    assert spec("# a comment\n" + text.replace("{}", "{ }"), tmp_path).spec_hash() == first
    (tmp_path / "s.sh").write_text("#!/bin/sh\necho 2\n")
    assert spec(text, tmp_path).spec_hash() != first


def test_debootstrap_base_passes_variant_and_packages_to_the_cached_recipe() -> None:
    from labgpu.system import base_image

    default = base_image.debootstrap_recipe(architecture="x86_64")
    buildd = base_image.debootstrap_recipe(variant="buildd", architecture="x86_64")
    assert default.variant == "minbase" and "buildd" in buildd.description
    assert base_image.recipe_hash(default) != base_image.recipe_hash(buildd)
    with pytest.raises(Exception, match="invalid debootstrap variant"):
        base_image.debootstrap_recipe(variant="tiny", architecture="x86_64")
    # The minimal spec asks for exactly the default recipe, so it shares the cached base with the test image.
    minimal = load_spec(ROOT / "templates" / "minimal.yaml").spec
    same = base_recipe(minimal, architecture="x86_64")
    assert same == default


# Server-image bases (simplestreams): validated here, not buildable on a machine without internet -----


def test_image_base_names_a_builtin_or_declared_remote() -> None:
    official = spec("name: demo\nbase:\n  image: images:debian/12\n").spec.base
    assert (official.remote_server, official.remote_alias) == (
        "https://images.linuxcontainers.org",
        "debian/12",
    )
    mirror = spec(
        "name: demo\nbase:\n  image: tuna:ubuntu/24.04\n  remotes:\n"
        "    tuna: https://mirrors.tuna.tsinghua.edu.cn/lxc-images\n"
    ).spec.base
    assert (mirror.remote_server, mirror.remote_alias) == (
        "https://mirrors.tuna.tsinghua.edu.cn/lxc-images",
        "ubuntu/24.04",
    )
    assert problems("name: demo\nbase:\n  image: x:y\n  remotes: {x: ftp://host}\n")[0].startswith(
        "x.yaml:4: base.remotes: remote x: expected an https:// (or http://) URL"
    )
    assert problems("name: demo\nbase:\n  debootstrap: {}\n  remotes: {x: https://h}\n")[0].startswith(
        "x.yaml:2: base: 'remotes' only goes with 'image'"
    )


def test_image_base_installs_sshd_and_sudo_with_apt() -> None:
    loaded = spec("name: demo\nbase:\n  image: ubuntu:24.04\n")
    assert guess_os_release(loaded.spec).id == "ubuntu"
    install = argvs(loaded, "packages")[-1]
    assert install[-2:] == ("openssh-server", "sudo")


def test_builder_pulls_an_image_base_from_its_server() -> None:
    loaded = spec(
        "name: demo\nbase:\n  image: tuna:debian/12\n  remotes: {tuna: https://mirrors.tuna.tsinghua.edu.cn/lxc-images}\n"
    )
    client = RuntimeClient(Endpoint.unix(Path("/nonexistent.sock")))
    builder = Builder(client, loaded, reporter=BuildReporter(), pool="default", network="labgpubr0")
    assert builder.prepare_base() == RemoteImage(
        server="https://mirrors.tuna.tsinghua.edu.cn/lxc-images", alias="debian/12"
    )


def test_creating_from_a_remote_image_sends_one_request_with_the_simplestreams_source() -> None:
    sent: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/1.0":
            meta = {"api_extensions": ["instance_create_start"], "environment": {"server": "incus"}}
            return httpx.Response(200, json={"type": "sync", "metadata": meta})
        if request.url.path == "/1.0/instances" and request.method == "POST":
            sent.append(json.loads(request.content))
            return httpx.Response(202, json={"type": "async", "metadata": {"id": "op1"}})
        if request.url.path == "/1.0/operations/op1/wait":
            return httpx.Response(200, json={"type": "sync", "metadata": {"status": "Success"}})
        return httpx.Response(404, json={"type": "error", "error": "not found", "error_code": 404})

    client = RuntimeClient(Endpoint.unix(Path("/nonexistent.sock")))
    client._http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://runtime")
    remote = RemoteImage(server="https://images.linuxcontainers.org", alias="debian/12")
    client.instances.create(
        "builder",
        remote_image=remote,
        devices={"root": {"type": "disk", "path": "/", "pool": "default"}},
        profiles=[],
        start=True,
    )
    assert len(sent) == 1
    assert sent[0]["source"] == {
        "type": "image",
        "mode": "pull",
        "server": "https://images.linuxcontainers.org",
        "protocol": "simplestreams",
        "alias": "debian/12",
    }
    assert sent[0]["start"] is True and sent[0]["profiles"] == []
    with pytest.raises(ValueError):
        client.instances.create("x", image="a", remote_image=remote)


# The plan --------------------------------------------------------------------------------------------


def test_apt_mirror_is_written_as_sources_for_the_distribution() -> None:
    loaded = spec(GOOD + "apt:\n  mirror: https://mirrors.tuna.tsinghua.edu.cn/debian/\n")
    debian = apt_sources(BOOKWORM, loaded.spec.apt)
    assert debian.splitlines()[1:] == [
        "deb https://mirrors.tuna.tsinghua.edu.cn/debian bookworm main",
        "deb https://mirrors.tuna.tsinghua.edu.cn/debian bookworm-updates main",
        "deb https://mirrors.tuna.tsinghua.edu.cn/debian-security bookworm-security main",
    ]
    pushed = [a for a in actions(loaded, "apt mirror") if isinstance(a, Push)]
    assert pushed[0].path == "/etc/apt/sources.list" and pushed[0].data == debian.encode()
    ubuntu = apt_sources(NOBLE, spec(GOOD + "apt:\n  mirror: http://mirrors.ustc.edu.cn/ubuntu\n").spec.apt)
    assert (
        "deb http://mirrors.ustc.edu.cn/ubuntu noble-security main restricted universe multiverse" in ubuntu
    )
    with pytest.raises(Exception, match="cannot write apt sources"):
        apt_sources(OsRelease(id="alpine", codename=""), loaded.spec.apt)


def test_packages_are_installed_noninteractively_after_one_apt_update() -> None:
    loaded = spec(
        GOOD + "packages: [vim, git]\ngcc:\n  versions: [12]\nenvironment:\n  http_proxy: http://proxy:3128\n"
    )
    steps = plan_steps(loaded, os_release=BOOKWORM, network=True)
    assert [s.name for s in steps] == ["network", "packages", "user", "sshd", "gcc", "clean"]
    runs = [a for s in steps for a in s.actions if isinstance(a, Run) and a.argv[0] == "apt-get"]
    assert [r.argv[:2] for r in runs] == [
        ("apt-get", "update"),
        ("apt-get", "install"),
        ("apt-get", "install"),
    ]
    for r in runs:
        assert r.env["DEBIAN_FRONTEND"] == "noninteractive"
        assert r.env["http_proxy"] == "http://proxy:3128"
    assert runs[1].argv[-3:] == ("--no-install-recommends", "vim", "git")


def test_user_and_sshd_steps() -> None:
    loaded = spec(
        GOOD + "user: {name: lab, uid: 1500, groups: [sudo, video]}\nssh: {password_authentication: false}\n"
    )
    assert argvs(loaded, "user") == [
        ("/bin/sh", "/run/labgpu-build/user", "lab", "1500", "/bin/bash", "sudo,video")
    ]
    sshd = actions(loaded, "sshd")
    dropin = next(a for a in sshd if isinstance(a, Push) and a.path == SSHD_DROPIN)
    assert dropin.data is not None
    assert b"PasswordAuthentication no\n" in dropin.data and b"PermitRootLogin no\n" in dropin.data
    assert ("systemctl", "enable", "labgpu-ssh-keygen.service", "ssh.service") in argvs(loaded, "sshd")


def test_gcc_versions_are_registered_with_update_alternatives() -> None:
    loaded = spec(GOOD + "gcc:\n  versions: [12, 11]\n  default: 11\n")
    runs = argvs(loaded, "gcc")
    assert runs[1][-4:] == ("gcc-11", "g++-11", "gcc-12", "g++-12")
    installs = [r for r in runs if r[:2] == ("update-alternatives", "--install")]
    assert [(r[4], r[5]) for r in installs] == [("/usr/bin/gcc-11", "100"), ("/usr/bin/gcc-12", "12")]
    assert installs[1][6:10] == ("--slave", "/usr/bin/g++", "g++", "/usr/bin/g++-12")
    assert runs[-1] == ("update-alternatives", "--set", "gcc", "/usr/bin/gcc-11")


def test_desktop_step_installs_and_configures_xrdp_vnc_and_chinese_input() -> None:
    loaded = load_spec(ROOT / "templates" / "desktop.yaml")
    steps = actions(loaded, "desktop", os_release=NOBLE)
    runs = [a.argv for a in steps if isinstance(a, Run)]
    install = runs[0]
    for package in (
        "tigervnc-tools",
        "xfce4",
        "xrdp",
        "xorgxrdp",
        "tigervnc-standalone-server",
        "fcitx5",
        "fonts-noto-cjk",
        "language-pack-zh-hans",
    ):
        assert package in install
    assert "--no-install-recommends" not in install  # the spec asks for recommends
    assert ("systemctl", "enable", "xrdp.service") in runs
    assert ("usermod", "-a", "-G", "ssl-cert", "xrdp") in runs
    assert ("localedef", "-i", "zh_CN", "-f", "UTF-8", "zh_CN.UTF-8") in runs
    assert ("touch", "/var/lib/systemd/linger/ubuntu") in runs
    files = {a.path: a for a in steps if isinstance(a, Push)}
    assert files["/home/ubuntu/.xsession"].owner == "ubuntu"
    session = (files["/home/ubuntu/.xsession"].data or b"").decode()
    assert "XMODIFIERS=@im=fcitx" in session and session.rstrip().endswith("exec startxfce4")
    assert b"-geometry 1920x1080" in (files[VNC_UNIT].data or b"")
    assert files["/home/ubuntu/.vnc/xstartup"].mode == 0o755


def test_miniconda_from_a_local_file_and_commands_from_scripts(tmp_path: Path) -> None:
    (tmp_path / "Miniconda3.sh").write_text("#!/bin/sh\n")
    (tmp_path / "post.sh").write_text("#!/bin/sh\n")
    loaded = spec(
        GOOD
        + "miniconda:\n  installer: Miniconda3.sh\n  condarc: {show_channel_urls: true}\n"
        + "environment: {PIP_INDEX_URL: 'https://pypi.tuna.tsinghua.edu.cn/simple'}\n"
        + "commands:\n  - [pip, --version]\n  - {script: post.sh, args: [--fast]}\n",
        tmp_path,
    )
    conda = actions(loaded, "miniconda", network=False)
    assert isinstance(conda[0], Push) and conda[0].source == tmp_path / "Miniconda3.sh"
    assert conda[1].argv == ("bash", "/run/labgpu-build/miniconda.sh", "-b", "-p", "/opt/miniconda3")
    assert conda[-1].argv == ("chown", "-R", "ubuntu:ubuntu", "/opt/miniconda3")
    first = actions(loaded, "command 1", network=False)
    assert first == [Run(("pip", "--version"), {"PIP_INDEX_URL": "https://pypi.tuna.tsinghua.edu.cn/simple"})]
    second = actions(loaded, "command 2", network=False)
    assert (
        isinstance(second[1], Push) and second[1].mode == 0o755 and second[1].source == tmp_path / "post.sh"
    )
    assert second[2].argv == ("/run/labgpu-build/scripts/2-post.sh", "--fast")
    steps = plan_steps(loaded, os_release=BOOKWORM, network=False)
    assert steps[-1].name == "clean"
    assert not any(s.needs_network for s in steps)


def test_plan_length_does_not_depend_on_the_distribution() -> None:
    for path in SHIPPED:
        loaded = load_spec(path)
        assert len(plan_steps(loaded, os_release=BOOKWORM, network=True)) == len(
            plan_steps(loaded, os_release=NOBLE, network=True)
        )


def test_os_release_is_read() -> None:
    text = 'PRETTY_NAME="Ubuntu 24.04 LTS"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n'
    assert OsRelease.parse(text) == NOBLE
    assert (
        OsRelease.parse("ID=linuxmint\nID_LIKE='ubuntu debian'\nUBUNTU_CODENAME=jammy\n").family == "ubuntu"
    )


# Versions --------------------------------------------------------------------------------------------


def test_versions_increase_by_day_and_number() -> None:
    day = date(2026, 11, 22)
    assert next_version([], day) == "20261122-1"
    assert next_version(["20261122-1", "20261122-2", "20261121-7"], day) == "20261122-3"
    assert next_version(["20261121-7"], day) == "20261122-1"
    # The clock went back: still a newer version than the newest.
    assert next_version(["20261125-2"], day) == "20261125-3"
    assert sorted(["20261122-10", "20261122-9", "x"], key=version_key) == ["x", "20261122-9", "20261122-10"]


def test_refs() -> None:
    assert parse_ref("minimal") == ("minimal", None)
    assert parse_ref("minimal/20261122-1") == ("minimal", "20261122-1")
    with pytest.raises(Exception, match="NAME or NAME/VERSION"):
        parse_ref("../x")


# Image export: a split image comes back as multipart ---------------------------------------------------


def test_multipart_export_is_split_into_files_whatever_the_chunking() -> None:
    rng = random.Random(7)
    meta = rng.randbytes(3000)
    rootfs = rng.randbytes(100_000) + b"\r\n--B0undar"  # a false start of the delimiter
    body = (
        b'--B0undary\r\nContent-Disposition: form-data; name="metadata"; filename="m"\r\n\r\n' + meta
        + b'\r\n--B0undary\r\nContent-Disposition: form-data; name="rootfs"; filename="r"\r\n'
        + b"Content-Type: application/octet-stream\r\n\r\n" + rootfs + b"\r\n--B0undary--\r\n"
    )  # fmt: skip
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(body)), rng.randrange(0, 30)))
        chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        parts: dict[str, io.BytesIO] = {}

        def open_part(name: str, parts: dict[str, io.BytesIO] = parts) -> io.BytesIO:
            parts[name] = io.BytesIO()
            parts[name].close = lambda: None  # type: ignore[method-assign]
            return parts[name]

        assert split_multipart(iter(chunks), b"B0undary", open_part) == ["metadata", "rootfs"]  # type: ignore[arg-type]
        assert parts["metadata"].getvalue() == meta and parts["rootfs"].getvalue() == rootfs
    with pytest.raises(Exception, match="ended before"):
        split_multipart(iter([body[:5000]]), b"B0undary", lambda _n: io.BytesIO())


# The CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for var in ("LABGPU_CONFIG", "LABGPU_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABGPU_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LABGPU_RUNTIME_URL", "unix:///nonexistent.sock")
    return tmp_path


def test_cli_refuses_a_bad_spec_with_exit_2_listing_every_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = cli_env / "bad.yaml"
    path.write_text(GOOD + "pakages: [vim]\nuser: {uid: x}\n")
    for command in ("build", "validate"):
        assert run(["template", command, str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{path}:4: unknown key 'pakages' (did you mean 'packages'?)" in err
        assert f"{path}:5: user.uid: should be a whole number, not a string" in err
        assert "Traceback" not in err


def test_cli_validate_shows_the_plan(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["template", "validate", str(ROOT / "templates" / "minimal.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "minimal"
    assert [s["name"] for s in out["steps"]] == ["user", "sshd", "clean"]


def test_cli_shows_a_failed_steps_output_then_one_error_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import labgpu.services.templates as templates_public

    def failing_build(*_args: Any, **_kw: Any) -> None:
        raise TemplateBuildError(
            "step 5/7 'command 1' failed (exit 1): false",
            step="command 1",
            command=["false"],
            output_tail="line one\nline two",
        )

    monkeypatch.setattr(templates_public, "build_template", failing_build)  # the CLI calls the public face
    assert run(["template", "build", str(ROOT / "templates" / "minimal.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "--- last output of step 'command 1' ---"
    assert err[1:3] == ["line one", "line two"]
    assert err[-1].startswith("error: step 5/7 'command 1' failed (exit 1): false")
