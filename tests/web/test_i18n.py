"""Languages: English and Simplified Chinese, chosen from the browser or by the person."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from labgpu.web import i18n
from labgpu.web.i18n import catalog
from labgpu.web.messages import SERVICE_MESSAGES
from tests.web.conftest import Portal, login, page_token

ROOT_SERVICES = catalog.WEB_DIR.parent / "services"


class _Text(HTMLParser):
    """What a person reads as UI text: outside script/style and outside pre/code (commands, config files,
    tokens: not translatable), plus the attributes that are shown."""

    SHOWN_ATTRS = ("placeholder", "aria-label", "title", "alt", "data-copied")
    SKIPPED = ("script", "style", "pre", "code")

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIPPED:
            self._skip += 1
        self.parts.extend(v for k, v in attrs if k in self.SHOWN_ATTRS and v)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIPPED:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def _msgid_patterns() -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for message in catalog.extract():
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        for msgid in ids:
            if not msgid:
                continue
            pieces = [re.escape(p) for p in re.split(r"%\(\w+\)s", msgid)]
            pattern = r"(?<![A-Za-z])" + r".{0,80}?".join(pieces) + r"(?![A-Za-z])"
            out.append((msgid, re.compile(pattern)))
    return out


def untranslated(html: str) -> list[str]:
    text = visible_text(html)
    return [msgid for msgid, pattern in _msgid_patterns() if pattern.search(text)]


def _zh(portal: Portal, address: str = "192.0.2.10") -> TestClient:
    return portal.client(address, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})


def test_the_catalogs_are_complete_and_compiled() -> None:
    assert catalog.problems() == []


def test_a_catalog_is_stale_when_its_translations_differ_not_when_another_babel_compiled_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(catalog.LOCALE_DIR, tmp_path / "locale")
    monkeypatch.setattr(catalog, "LOCALE_DIR", tmp_path / "locale")
    po = catalog.po_path("zh_Hans")
    mo = po.with_suffix(".mo")
    with monkeypatch.context() as m:
        m.setattr("babel.messages.catalog.VERSION", "0.0-another-release")
        catalog.compile_all()
    assert b"Generated-By: Babel 0.0-another-release" in mo.read_bytes()
    assert not catalog.is_stale("zh_Hans")

    # A translation changed in the .po and not compiled: a singular, then (compiled meanwhile) a plural form.
    po.write_text(po.read_text().replace('msgstr "请先登录。"', 'msgstr "请登录。"'))
    assert "zh_Hans: messages.mo is stale (run: python -m labgpu.web.i18n compile)" in catalog.problems()
    catalog.compile_all()
    assert not catalog.is_stale("zh_Hans")
    po.write_text(po.read_text().replace('msgstr[0] "%(num)s 天"', 'msgstr[0] "%(num)s 日"'))
    assert catalog.is_stale("zh_Hans")


def test_main_pages_in_chinese_have_no_untranslated_strings(portal: Portal) -> None:
    from labgpu.store.models import Role

    portal.add_account("boss", role=Role.ADMIN)
    client = _zh(portal)
    pages = {"/login": client.get("/login")}
    pages["/login (wrong password)"] = login(client, "boss", "wrong-wrong-wrong")
    assert login(client, "boss").status_code == 303
    pages["/me"] = client.get("/me")
    pages["/account"] = client.get("/account")
    pages["/account (new token)"] = client.post(
        "/account/tokens", data={"name": "laptop", "csrf_token": page_token(client)}
    )
    pages["/account (weak password)"] = client.post(
        "/account/password",
        data={
            "current_password": "x",
            "new_password": "password1",
            "confirm_password": "password1",
            "csrf_token": page_token(client),
        },
    )
    pages["404"] = client.get("/no/such/page")
    pages["/login (throttled)"] = _throttled_login_page(portal)
    for name, response in pages.items():
        assert response.headers["content-language"] == "zh-Hans", name
        assert '<html lang="zh-Hans">' in response.text, name
        assert untranslated(response.text) == [], name
    assert "用户名或密码错误" in pages["/login (wrong password)"].text
    assert "最常见的密码" in pages["/account (weak password)"].text
    assert "分钟后重试" in pages["/login (throttled)"].text


def _throttled_login_page(portal: Portal):  # type: ignore[no-untyped-def]
    client = _zh(portal, "198.51.100.1")
    for _ in range(portal.settings.login_max_failures_per_account):
        login(client, "nobody-at-all", "guess-guess")
    response = login(client, "nobody-at-all", "guess-guess")
    assert response.status_code == 429
    return response


def test_the_same_check_finds_english_on_an_english_page(portal: Portal) -> None:
    html = portal.client().get("/login").text
    assert "Log in" in untranslated(html)


def test_language_from_the_browser_and_the_persons_choice(portal: Portal) -> None:
    client = portal.client(headers={"Accept-Language": "de-DE,zh-TW;q=0.8,en;q=0.5"})
    assert client.get("/login").headers["content-language"] == "zh-Hans"
    english = portal.client(headers={"Accept-Language": "en-GB,zh;q=0.3"})
    assert english.get("/login").headers["content-language"] == "en"
    assert portal.client().get("/login").headers["content-language"] == "en"
    # The switcher's choice (a cookie) beats Accept-Language.
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    r = client.post(
        "/lang", data={"lang": "en", "next": "/login", "csrf_token": token.group(1)}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/login").headers["content-language"] == "en"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN", "zh_Hans"),
        ("zh-Hans-CN", "zh_Hans"),
        ("zh-TW", "zh_Hans"),
        ("en-US,en;q=0.9", "en"),
        ("fr-FR, de;q=0.7", None),
        ("fr, zh;q=0.1, en;q=0.2", "en"),
        ("zh;q=0, en;q=0.1", "en"),
        ("", None),
        ("garbage;;q=x,,", None),
    ],
)
def test_accept_language_negotiation(header: str, expected: str | None) -> None:
    assert i18n.from_accept_language(header) == expected


def test_service_messages_shown_on_pages_still_exist_in_the_services() -> None:
    """web/messages.py lists service messages so they get translated; each must still be raised somewhere."""
    sources = "".join(p.read_text() for p in ROOT_SERVICES.rglob("*.py"))
    sources += "".join(p.read_text() for p in (ROOT_SERVICES.parent / "domain").glob("*.py"))
    sources += "".join(p.read_text() for p in catalog.WEB_DIR.rglob("*.py") if p.name != "messages.py")
    flat = " ".join(sources.split()).replace('" "', "")
    for message in SERVICE_MESSAGES:
        probe = message.replace("8", "{MIN_PASSWORD_LENGTH}").replace("1024", "{MAX_PASSWORD_LENGTH}")
        probe = probe.replace("3650", "{MAX_TOKEN_DAYS}").replace(
            "50 tokens", "{MAX_TOKENS_PER_MEMBER} tokens"
        )
        assert message in flat or probe in flat, message
