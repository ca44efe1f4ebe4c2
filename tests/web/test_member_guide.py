"""The member's guide in the portal (/help): in the reader's language, linked from "My container" and the top
bar, its pages linked to each other, a page that does not exist a 404 whatever the name looks like."""

from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from sqlalchemy import select

from labgpu.store.models import Host, HostKind, Member, PortMap, PortPurpose, Role
from labgpu.web import guide
from tests.web.conftest import Portal, login
from tests.web.test_i18n import untranslated

# The guide reads no table of its own: one store is enough (the routes' store access is the member's row).
pytestmark = pytest.mark.parametrize("web_settings", ["sqlite"], indirect=True)
LINK = re.compile(r'<a href="(/help[^"]*)"')
ID = re.compile(r' id="([^"]+)"')


def _guide_part(page: str) -> str:
    return page.split('<article class="card guide"', 1)[1].split("</article>", 1)[0]


def test_the_guide_in_english_and_chinese_linked_from_my_container(portal: Portal) -> None:
    portal.add_account("alice")
    client = portal.client()
    assert login(client, "alice").status_code == 303
    me = client.get("/me")
    assert '<p class="muted" id="guide-link">' in me.text and 'href="/help"' in me.text

    for locale, headers, title, connecting in (
        ("en", {}, "Member&#39;s guide", "Connecting to your container"),
        ("zh_Hans", {"Accept-Language": "zh-CN"}, "成员使用指南", "连接容器"),
    ):
        index = client.get("/help", headers=headers)
        assert index.status_code == 200
        assert "<h1 id=" in index.text and title in index.text
        assert '<a href="/help">' in index.text  # the top bar's Help
        contents = guide.pages(locale)
        folder = Path("docs/member") / ("zh" if locale != "en" else "")
        assert len(contents) == len(list(folder.glob("*.md")))  # every page of docs/member
        # Every page, and every link between them, lands on a page and an id that exist.
        answers = {page.url: client.get(page.url, headers=headers) for page in contents.values()}
        assert {url: answer.status_code for url, answer in answers.items()} == dict.fromkeys(answers, 200)
        ids = {url: set(ID.findall(answer.text)) for url, answer in answers.items()}
        for url, answer in answers.items():
            for href in LINK.findall(_guide_part(answer.text)):
                target, _, fragment = html.unescape(href).partition("#")
                assert target in ids, (url, href)
                assert not fragment or unquote(fragment) in ids[target], (url, href)
        if locale == "zh_Hans":  # the page around the guide is translated (the guide is the docs' own text)
            assert 'lang="zh-Hans"' in index.text
            assert untranslated(index.text.replace(_guide_part(index.text), "")) == []
        page = client.get("/help/connecting", headers=headers).text
        assert connecting in page
        assert '<pre><code class="language-sh">ssh -p 22001 ubuntu@gpu1.lab.example.edu' in page
        assert 'aria-current="page">' + connecting in page
        assert 'id="guide-values"' not in page  # alice has no container: the examples stay examples
        # Links that leave the guide (the admin's docs, the other language) are text, not broken links.
        assert "../admin" not in page and ".md" not in "".join(LINK.findall(page))


def test_an_admin_reads_the_guide_and_a_page_that_does_not_exist_is_a_404(portal: Portal) -> None:
    portal.add_account("boss", role=Role.ADMIN)
    client = portal.client()
    assert login(client, "boss").status_code == 303
    assert client.get("/help/gpus").status_code == 200
    for url in (
        "/help/nothing-here",
        "/help/README",
        "/help/connecting.md",
        "/help/zh",
        "/help/%2e%2e",
        "/help/..%2f..%2fpyproject.toml",
        "/help/..%2F__init__.py",
        "/help/%2fetc%2fpasswd",
        "/help/zh%2fconnecting",
        "/help/connecting%00",
        "/help/" + "x" * 65,
    ):
        answer = client.get(url)
        assert answer.status_code in (404, 422), url
        assert (
            "[project]" not in answer.text
            and "root:x:0" not in answer.text
            and "markdown_it" not in answer.text
        )
    missing = client.get("/help/nothing-here", headers={"Accept-Language": "zh-CN"})
    assert missing.status_code == 404 and "成员使用指南中没有这一页" in missing.text


def give_container(portal: Portal, name: str, *, ssh_port: int, address: str) -> None:
    """A container for ``name`` on a host whose members connect to ``address``, as `member add` records it."""
    with portal.svc.session() as session:
        host = Host(name="gpu1", kind=HostKind.LXD, public_address=address)
        session.add(host)
        member = session.scalars(select(Member).where(Member.name == name)).one()
        member.host, member.container = host, name
        session.add(
            PortMap(
                member=member,
                host=host,
                listen_address="0.0.0.0",
                host_port=ssh_port,
                container_port=22,
                purpose=PortPurpose.SSH,
            )
        )


def test_the_guide_shows_the_readers_own_container(portal: Portal) -> None:
    portal.add_account("carol")
    give_container(portal, "carol", ssh_port=22017, address="gpu7.campus.test")
    client = portal.client()
    assert login(client, "carol").status_code == 303
    page = client.get("/help/connecting").text
    assert "ssh -p 22017 ubuntu@gpu7.campus.test" in page
    assert "Host labgpu-carol\n    HostName gpu7.campus.test\n    Port 22017" in page
    assert 'id="guide-values"' in page and "22001" not in page
    zh = client.get("/help/connecting", headers={"Accept-Language": "zh-CN"}).text
    assert "ssh -p 22017 ubuntu@gpu7.campus.test" in zh and "SSH 端口 22017" in zh
