"""Pure parts of many-hosts: host URLs, trust tokens, asking hosts in parallel."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from labgpu.errors import BadInput, LabgpuError
from labgpu.runtime.certs import decode_trust_token
from labgpu.runtime.errors import RuntimeError_
from labgpu.runtime.migration import PULL, PUSH, Peer, copy_mode
from labgpu.services.clients import HostAddress, parse_host_url
from labgpu.services.hosts._inventory import ask_all, parse_gpus
from labgpu.services.hosts._remote import normalize_agent_url, normalize_url, validate_host_name


def test_host_url_round_trip() -> None:
    address = HostAddress(base="https://10.0.0.2:8443", cluster="lab", target="node-2")
    url = address.to_url()
    assert url == "https://10.0.0.2:8443?cluster=lab&target=node-2"
    assert parse_host_url(url) == address
    assert parse_host_url(url).hostname == "10.0.0.2"
    assert parse_host_url("https://gpu2.lab:8443") == HostAddress(base="https://gpu2.lab:8443")
    assert parse_host_url("unix:///var/lib/incus/unix.socket").hostname is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("gpu2.lab", "https://gpu2.lab:8443"),
        ("https://gpu2.lab", "https://gpu2.lab:8443"),
        ("https://10.0.0.2:9443/", "https://10.0.0.2:9443"),
        ("https://[fd00::2]", "https://[fd00::2]:8443"),
        ("unix:///var/lib/incus/unix.socket", "unix:///var/lib/incus/unix.socket"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize("bad", ["http://gpu2:8443", "https://gpu2/1.0", "https://u@gpu2", "unix://rel/sock"])
def test_normalize_url_refuses(bad: str) -> None:
    with pytest.raises(BadInput):
        normalize_url(bad)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (" http://10.0.0.2:9410/ ", "http://10.0.0.2:9410"),
        ("https://gpu2.lab:9410/agent/", "https://gpu2.lab:9410/agent"),
        ("http://GPU2.lab:9410", "http://GPU2.lab:9410"),
        ("http://gpu_2:9410", "http://gpu_2:9410"),
        ("http://[fd00::2]:9410", "http://[fd00::2]:9410"),
    ],
)
def test_normalize_agent_url(given: str, expected: str) -> None:
    assert normalize_agent_url(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "10.0.0.2:9410",
        "file:///etc/passwd",
        "http://u:pw@gpu2:9410",
        "http://gpu2:9410/?token=x",
        "http://gpu2:94x",
        # The URL is stored as typed and gets the agent token: urlparse would drop the newline and tab.
        "http://gpu2\n.evil:9410",
        "http://gpu2:9410/x\ny",
        "http://gpu2\t:9410",
        "http://gpu2:9410/a b",
        "http://gpu2:9410/\x00",
        "http://gpu2\x1b[31m:9410",
        "http://gpu2[:9410",
        "http://$(id):9410",
        "http://gpu2;reboot:9410",
        "http://-x:9410",
    ],
)
def test_normalize_agent_url_refuses(bad: str) -> None:
    with pytest.raises(BadInput, match="invalid agent URL"):
        normalize_agent_url(bad)


@pytest.mark.parametrize("name", ["gpu1", "node-2", "GPU.lab", "a"])
def test_host_names(name: str) -> None:
    assert validate_host_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "x-", "a b", "a/b", "x" * 64, "gpu;rm"])
def test_bad_host_names(name: str) -> None:
    with pytest.raises(BadInput):
        validate_host_name(name)


def _token(**fields: object) -> str:
    return base64.b64encode(json.dumps(fields).encode()).decode()


def test_trust_token_decoded() -> None:
    text = _token(
        client_name="labgpu", fingerprint="AB" * 32, addresses=["10.0.0.2:8443"], secret="s3", expires_at="x"
    )
    token = decode_trust_token(text + "\n")
    assert token.fingerprint == "ab" * 32
    assert token.client_name == "labgpu"
    assert token.addresses == ("10.0.0.2:8443",)
    assert token.text == text


def test_trust_token_refuses_other_things() -> None:
    with pytest.raises(BadInput, match="not a trust token"):
        decode_trust_token("hello")
    with pytest.raises(BadInput, match="cluster join token"):
        decode_trust_token(_token(server_name="n2", fingerprint="ab", secret="s", addresses=[]))


def test_ask_all_waits_no_longer_than_the_timeout() -> None:
    release = threading.Event()

    def hangs() -> str:
        release.wait(10)
        return "late"

    def fails() -> str:
        raise LabgpuError("refused")

    started = time.monotonic()
    answers = ask_all({"a": lambda: "ok", "b": hangs, "c": fails}, timeout=0.5)
    assert time.monotonic() - started < 1.5
    release.set()
    assert answers["a"].value == "ok" and answers["a"].answered
    assert answers["b"].error == "no answer within 0.5s" and not answers["b"].answered
    assert answers["c"].error == "refused"


def test_gpus_numbered_like_nvidia_smi() -> None:
    resources = {
        "gpu": {
            "cards": [
                {"driver": "nvidia", "pci_address": "0000:81:00.0", "product": "H100"},
                {"driver": "i915", "pci_address": "0000:00:02.0", "product": "UHD"},
                {"driver": "nvidia", "pci_address": "0000:41:00.0", "product": "H100"},
            ]
        }
    }
    gpus = parse_gpus(resources)
    assert [(g.index, g.pci_address) for g in gpus] == [
        (0, "0000:41:00.0"),
        (1, "0000:81:00.0"),
        (-1, "0000:00:02.0"),
    ]


def test_copy_mode() -> None:
    class Client:  # only passed around
        target = None

    c = Client()
    https = Peer(client=c, url="https://a:8443", certificate="PEM")  # type: ignore[arg-type]
    unix = Peer(client=c, url=None, certificate=None)  # type: ignore[arg-type]
    assert copy_mode(https, https) == PULL
    assert copy_mode(unix, https) == PUSH
    assert copy_mode(https, unix) == PULL
    with pytest.raises(RuntimeError_):
        copy_mode(unix, unix)
