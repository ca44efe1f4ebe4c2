"""The portal's languages: English (the source strings) and Simplified Chinese (a gettext catalog).

Catalogs live in ``locale/<locale>/LC_MESSAGES/messages.po`` beside this file; the compiled ``.mo`` files
are committed next to them, so an installed wheel needs no build step. After changing a UI string run
``python -m labgpu.web.i18n update``, translate the new entries in the ``.po`` files, then
``python -m labgpu.web.i18n compile`` (a test fails when a ``.mo`` is stale or an entry is untranslated).

The language of a request: the ``labgpu_lang`` cookie (the person's choice, set by the switcher) when it
names a supported one, else the best match in ``Accept-Language``, else English. Every Chinese tag (zh,
zh-CN, zh-TW, zh-Hant, ...) gets Simplified Chinese, the only Chinese catalog there is.
"""

from __future__ import annotations

import functools
import gettext
from pathlib import Path

from babel.support import NullTranslations, Translations

DOMAIN = "messages"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT_LOCALE = "en"
# locale id -> (the language's own name, the HTML lang attribute)
LOCALES: dict[str, tuple[str, str]] = {"en": ("English", "en"), "zh_Hans": ("简体中文", "zh-Hans")}
LANG_COOKIE = "labgpu_lang"


@functools.cache
def translations(locale: str) -> gettext.NullTranslations:
    """The catalog for ``locale`` (NullTranslations for English and for unknown locales)."""
    if locale == DEFAULT_LOCALE or locale not in LOCALES:
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), [locale], DOMAIN)


def normalize(tag: str | None) -> str | None:
    """The supported locale for a language tag such as ``zh-CN`` or ``en-GB``; None when none fits."""
    if not tag:
        return None
    tag = tag.strip().replace("_", "-").lower()
    if tag in ("zh-hans", "zh"):
        return "zh_Hans"
    primary = tag.split("-", 1)[0]
    if primary == "zh":
        return "zh_Hans"
    if primary == "en":
        return "en"
    return None


def from_accept_language(header: str | None) -> str | None:
    """The best supported locale in an ``Accept-Language`` header, by q-value then order."""
    if not header:
        return None
    choices: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        locale = normalize(tag)
        if locale is not None and quality > 0:
            choices.append((-quality, position, locale))
    return min(choices)[2] if choices else None


def choose_locale(cookie: str | None, accept_language: str | None) -> str:
    """The locale for a request: the cookie's choice, else Accept-Language, else English."""
    if cookie in LOCALES:
        return cookie
    return from_accept_language(accept_language) or DEFAULT_LOCALE
