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
from tests.web.conftest import Portal, login, page_token


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


def test_messages_the_services_and_the_domain_raise_are_in_the_catalog() -> None:
    ids = {m.id for m in catalog.extract()}
    assert "wrong name or password" in ids  # services/portal, raised by the login
    assert "the password is too short: use at least %(length)s characters" in ids  # a message with a value
    assert "a member name is required" in ids  # domain/


def test_an_edited_service_message_is_reported_untranslated_not_silently_shown_in_english(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog follows the N_() marks where errors are raised: editing the English text of one makes a
    new entry without a translation, and the check (CI) names it."""
    services = tmp_path / "services"
    services.mkdir()
    (services / "feature.py").write_text(
        "from labgpu.errors import N_, BadInput\n\n"
        "def check() -> None:\n"
        '    raise BadInput(N_("wrong name or password, edited"))\n'
    )
    monkeypatch.setattr(catalog, "MESSAGE_DIRS", (*catalog.MESSAGE_DIRS, services))
    assert (
        "zh_Hans: missing 'wrong name or password, edited' (run: python -m labgpu.web.i18n update)"
        in catalog.problems()
    )


def test_a_translation_that_drops_a_placeholder_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(catalog.LOCALE_DIR, tmp_path / "locale")
    monkeypatch.setattr(catalog, "LOCALE_DIR", tmp_path / "locale")
    po = catalog.po_path("zh_Hans")
    po.write_text(po.read_text().replace("至少需要 %(length)s 个字符", "至少需要 8 个字符"))
    catalog.compile_all()
    assert any("use at least %(length)s characters" in p and "placeholder" in p for p in catalog.problems())


def test_a_service_error_is_shown_translated_with_its_values() -> None:
    from labgpu.services.portal._passwords import WeakPassword, check_password_strength
    from labgpu.web.templating import translate

    with pytest.raises(WeakPassword) as caught:
        check_password_strength("short", name="alice")
    assert caught.value.message == "the password is too short: use at least 8 characters"  # CLI and API
    zh = i18n.translations("zh_Hans").gettext
    assert translate(zh, caught.value) == "密码太短：至少需要 8 个字符"
    # A message that is not in the catalog (a name in it) is shown as it is.
    from labgpu.errors import BadInput

    assert translate(zh, BadInput("no member named bob")) == "no member named bob"
