"""Maintaining the catalogs with Babel: extract the UI strings, update the ``.po`` files, compile ``.mo``.

Run as ``python -m labgpu.web.i18n {extract,update,compile,check}``; see the package docstring.
Strings are taken from the templates (``{% trans %}`` blocks, ``_()``/``gettext()``/``ngettext()`` calls)
and from the web layer's Python code (``_()`` and ``N_()``, the latter marking a string to translate later),
and the messages that services and the domain raise marked with ``labgpu.errors.N_``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po, write_po

from labgpu import __version__
from labgpu.web.i18n import DEFAULT_LOCALE, DOMAIN, LOCALE_DIR, LOCALES

WEB_DIR = Path(__file__).resolve().parents[1]
TEMPLATE_FILE = LOCALE_DIR.parent / f"{DOMAIN}.pot"
KEYWORDS = {**DEFAULT_KEYWORDS, "N_": None}
# Beyond the web layer, the fixed messages the services and the domain raise, marked N_() where they are
# raised (labgpu.errors.N_): the catalog follows the code, and an edited message shows up as untranslated.
MESSAGE_DIRS = (WEB_DIR.parent / "services", WEB_DIR.parent / "domain")
METHOD_MAP = [("templates/**.html", "jinja2.ext:babel_extract"), ("**.py", "python")]
OPTIONS_MAP = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"}}


HEADER = """\
# Translations of labgpu's web portal.
# Copyright (C) labgpu developers. Distributed under the same licence as labgpu (Apache-2.0).
#"""


def po_path(locale: str) -> Path:
    return LOCALE_DIR / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


def extract() -> Catalog:
    """Every translatable string of the web layer, with where it is used."""
    catalog = Catalog(
        project="labgpu",
        version=__version__,
        charset="utf-8",
        copyright_holder="labgpu developers",
        msgid_bugs_address="",
        header_comment=HEADER,
    )
    for filename, lineno, message, comments, context in extract_from_dir(
        str(WEB_DIR), METHOD_MAP, OPTIONS_MAP, keywords=KEYWORDS, comment_tags=("TRANSLATORS:",)
    ):
        if "i18n/" in filename.replace("\\", "/"):
            continue
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    for directory in MESSAGE_DIRS:
        for filename, lineno, message, comments, context in extract_from_dir(
            str(directory), [("**.py", "python")], keywords={"N_": None}, comment_tags=("TRANSLATORS:",)
        ):
            where = f"{directory.name}/{filename}"
            catalog.add(message, None, [(where, lineno)], auto_comments=comments, context=context)
    return catalog


def _write_po(path: Path, catalog: Catalog) -> None:
    buf = io.BytesIO()
    write_po(buf, catalog, width=100, sort_output=False, omit_header=False, include_lineno=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())


def write_template() -> Catalog:
    template = extract()
    _write_po(TEMPLATE_FILE, template)
    return template


def update() -> None:
    """Extract, then merge the new strings into each locale's ``.po`` (new ones untranslated)."""
    template = write_template()
    for locale in LOCALES:
        if locale == DEFAULT_LOCALE:
            continue
        path = po_path(locale)
        if path.exists():
            with path.open("rb") as f:
                catalog = read_po(f, locale=locale)
        else:
            catalog = Catalog(locale=locale, project="labgpu", version=__version__, header_comment=HEADER)
        catalog.update(template, no_fuzzy_matching=True)
        catalog.header_comment = HEADER
        catalog.msgid_bugs_address = ""
        catalog.last_translator = catalog.language_team = "labgpu developers"
        catalog.revision_date = template.creation_date
        catalog.obsolete.clear()
        _write_po(path, catalog)


def compiled(locale: str) -> bytes:
    """The ``.mo`` bytes for a locale's ``.po`` (fuzzy entries left out, as gettext does)."""
    with po_path(locale).open("rb") as f:
        catalog = read_po(f, locale=locale)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    return buf.getvalue()


Text = str | tuple[str, ...]  # a message, or a plural message's forms


def _frozen(text: str | Sequence[str] | None) -> Text | None:
    return text if text is None or isinstance(text, str) else tuple(text)  # read_mo gives forms as a list


def _translations(mo: bytes) -> tuple[str, dict[tuple[str | None, Text | None], Text | None]]:
    """What gettext reads in a ``.mo``: the plural rule and each (context, msgid) -> msgstr, plural forms
    included. Not the rest of the header: it names the Babel version that wrote the file, so comparing bytes
    would call every catalog stale after a Babel release."""
    catalog = read_mo(io.BytesIO(mo))
    return catalog.plural_forms, {(m.context, _frozen(m.id)): _frozen(m.string) for m in catalog if m.id}


def is_stale(locale: str) -> bool:
    """Whether the committed ``.mo`` of a locale is missing or translates differently from its ``.po``."""
    mo = po_path(locale).with_suffix(".mo")
    return not mo.exists() or _translations(mo.read_bytes()) != _translations(compiled(locale))


def compile_all() -> list[Path]:
    written = []
    for locale in LOCALES:
        if locale == DEFAULT_LOCALE:
            continue
        path = po_path(locale).with_suffix(".mo")
        path.write_bytes(compiled(locale))
        written.append(path)
    return written


_PLACEHOLDER = re.compile(r"%\((\w+)\)")


def _placeholder_problems(catalog: Catalog) -> list[str]:
    """Translations that lose or invent a ``%(name)s`` (Babel lets a translation drop them all): a page
    would show a number or a name missing, or fail to fill it in."""
    found = []
    for message in catalog:
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, tuple | list) else (message.id,)
        strings = message.string if isinstance(message.string, tuple | list) else (message.string,)
        wanted = {name for text in ids for name in _PLACEHOLDER.findall(text)}
        have = {name for text in strings if text for name in _PLACEHOLDER.findall(text)}
        if wanted != have:
            found.append(
                f"placeholders of {ids[0]!r} are {sorted(wanted)} but its translation has {sorted(have)}"
            )
    return found


def problems() -> list[str]:
    """What is out of date: strings missing from a catalog, untranslated or fuzzy entries, stale .mo."""
    found: list[str] = []
    wanted = {m.id for m in extract() if m.id}
    for locale in LOCALES:
        if locale == DEFAULT_LOCALE:
            continue
        path = po_path(locale)
        with path.open("rb") as f:
            catalog = read_po(f, locale=locale)
        have = {m.id: m for m in catalog if m.id}
        for msgid in sorted(wanted, key=str):
            message = have.get(msgid)
            if message is None:
                found.append(f"{locale}: missing {msgid!r} (run: python -m labgpu.web.i18n update)")
            elif (
                message.fuzzy
                or not message.string
                or (isinstance(message.string, tuple) and not all(message.string))
            ):
                found.append(f"{locale}: untranslated {msgid!r}")
        for message, errors in catalog.check():  # Babel's own checks of python-format entries
            found.extend(f"{locale}: {message.id!r}: {error}" for error in errors)
        found.extend(f"{locale}: {problem}" for problem in _placeholder_problems(catalog))
        if is_stale(locale):
            found.append(f"{locale}: {DOMAIN}.mo is stale (run: python -m labgpu.web.i18n compile)")
    return found
