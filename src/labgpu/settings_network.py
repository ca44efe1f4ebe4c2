"""The container network and package-mirror settings, beside each other: :class:`Settings`
(``labgpu.settings``) takes them in as they are (``network_mode`` is ``LABGPU_NETWORK_MODE`` and so on).
The network is made by ``host init`` (services/hosts); the mirrors are written into containers and template
builds (labgpu.domain.mirrors)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

#: Well-known mirrors in China: root URL (holding debian/, debian-security/, ubuntu/), pip index, conda root.
PRESETS: dict[str, tuple[str, str, str]] = {
    "tuna": (
        "https://mirrors.tuna.tsinghua.edu.cn",
        "https://pypi.tuna.tsinghua.edu.cn/simple",
        "https://mirrors.tuna.tsinghua.edu.cn/anaconda",
    ),
    "ustc": (
        "https://mirrors.ustc.edu.cn",
        "https://mirrors.ustc.edu.cn/pypi/simple",
        "https://mirrors.ustc.edu.cn/anaconda",
    ),
    "aliyun": (
        "https://mirrors.aliyun.com",
        "https://mirrors.aliyun.com/pypi/simple",
        "https://mirrors.aliyun.com/anaconda",
    ),
    "sjtu": (
        "https://mirror.sjtu.edu.cn",
        "https://mirror.sjtu.edu.cn/pypi/web/simple",
        "https://mirror.sjtu.edu.cn/anaconda",
    ),
}
_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%/+-]*)?$")


def check_mirror(value: str, *, setting: str) -> str:
    """A setting's value: empty, a preset name, or an http(s) URL without spaces, quotes or a query.
    Raises ValueError naming the setting."""
    value = value.strip()
    if not value or value in PRESETS or _URL_RE.match(value):
        return value.rstrip("/")
    presets = ", ".join(sorted(PRESETS))
    raise ValueError(f"{setting}: {value!r} is neither a preset ({presets}) nor an http(s) URL")


class NetworkSettings(BaseModel):
    """Where containers' traffic goes, and which package mirrors they use; see docs/admin/host-setup.md."""

    network_mode: Literal["none", "bridge", "macvlan"] = Field(
        "bridge",
        description="Container network made by `host init`: bridge (a managed bridge with IPv4 NAT, so "
        "containers reach package mirrors; the default), none (no NIC; SSH through proxy devices only), or "
        "macvlan on network_parent (containers get addresses on the campus network).",
    )
    network_isolation: bool = Field(
        True,
        description="On a bridge, members' containers cannot reach each other (the NIC is an isolated "
        "bridge port, security.port_isolation); they still reach the host and, through NAT, the world. "
        "false: containers on the bridge reach each other (e.g. training across members' containers).",
    )
    network_name: str = Field(
        "labgpubr0", description="Name of the network `host init` creates (bridge or macvlan)."
    )
    network_subnet: str | None = Field(
        None, description="IPv4 address/prefix of the bridge, e.g. 10.99.0.1/24. Empty: a free /24 is picked."
    )
    network_parent: str | None = Field(
        None, description="Host interface for network_mode=macvlan (e.g. the campus NIC)."
    )
    apt_mirror: str = Field(
        "",
        description="apt mirror written into members' containers and template builds: a preset (tuna, ustc, "
        "aliyun, sjtu) or the root URL of a mirror holding debian/, debian-security/ and ubuntu/ (a campus "
        "mirror). Empty: the distribution's own servers. `reconcile` brings running containers along.",
    )
    pip_index_url: str = Field(
        "",
        description="pip index written into containers' /etc/pip.conf and used by template builds: a preset "
        "(tuna, ustc, aliyun, sjtu) or an index URL such as https://pypi.example.edu/simple. Empty: PyPI.",
    )
    conda_mirror: str = Field(
        "",
        description="Anaconda mirror written into the container user's ~/.condarc: a preset (tuna, ustc, "
        "aliyun, sjtu) or the root URL holding pkgs/ and cloud/. Empty: conda's own channels.",
    )

    @field_validator("apt_mirror", "pip_index_url", "conda_mirror")
    @classmethod
    def _mirror(cls, value: str, info: object) -> str:
        return check_mirror(value, setting=str(getattr(info, "field_name", "mirror")))
