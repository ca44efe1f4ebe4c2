"""The member's guide (docs/member) rendered in the portal, in the reader's language: ``/help`` and
``/help/PAGE``.

The Markdown under ``pages/`` is a copy of docs/member that ``scripts/gen-docs`` makes (a test keeps the two
identical): docs/member stays the one place the guide is written and read on the project's site, and the
package carries the copy, so an installed wheel serves the guide without a checkout and there is one code
path for an installed and an editable labgpu.

Rendering: markdown-it-py (CommonMark and tables). Raw HTML in a page is escaped, not passed through.
Headings get the ids GitHub gives them, so ``connecting.md#ssh-keys`` works on both sites; links between
the pages of one language become portal links; a link that leaves the guide (the admin's docs, the other
language: the portal's language switch does that) is shown as its text. Where a page shows the guide's
example values in code (``alice``, ``gpu1.lab.example.edu``, ``22001``, ...), the reader's own are put in
when they have a container.
"""

from __future__ import annotations

import functools
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

PAGES_DIR = Path(__file__).resolve().parent / "pages"
# The reader's locale -> the folder of its pages, relative to PAGES_DIR.
FOLDERS = {"en": "", "zh_Hans": "zh"}
INDEX = "README"
# The example values the guide uses in its code; replaced by the reader's own.
EXAMPLE_NAME = "alice"
EXAMPLE_ADDRESS = "gpu1.lab.example.edu"
EXAMPLE_PORTS = {"ssh": "22001", "rdp": "22002", "vnc": "22003"}
EXAMPLE_USER = "ubuntu"
EXAMPLE_HOME = f"/home/{EXAMPLE_USER}/{EXAMPLE_NAME}"


@dataclass(frozen=True)
class ReaderValues:
    """The reader's own connection values, put in where the guide's code shows its examples."""

    name: str
    address: str
    user: str
    ports: dict[str, int]
    container_home: str


@dataclass(frozen=True)
class GuidePage:
    """One page of the guide in one language: its name in URLs (``""`` for the index), title and source."""

    name: str
    title: str
    source: str

    @property
    def url(self) -> str:
        return f"/help/{self.name}" if self.name else "/help"


def _md() -> MarkdownIt:
    # "html": False is the point: a page's raw HTML is shown as text, never passed to the browser.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def slug(text: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (letters of every script kept),
    spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def _plain(inline: Token) -> str:
    return "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))


@functools.cache
def pages(locale: str) -> dict[str, GuidePage]:
    """The guide's pages in a language (English for an unknown one), in the order the index links them."""
    folder = PAGES_DIR / FOLDERS.get(locale, "")
    found: dict[str, GuidePage] = {}
    for path in sorted(folder.glob("*.md")):
        source = path.read_text(encoding="utf-8")
        tokens = _md().parse(source)
        title = next(
            (
                _plain(tokens[i + 1])
                for i, t in enumerate(tokens)
                if t.type == "heading_open" and t.tag == "h1"
            ),
            path.stem,
        )
        name = "" if path.stem == INDEX else path.stem
        found[name] = GuidePage(name=name, title=title, source=source)
    index = found.get("")
    order = re.findall(r"\]\(([\w-]+)\.md", index.source) if index else []
    rank = {name: i for i, name in enumerate(dict.fromkeys(order))}
    return dict(
        sorted(found.items(), key=lambda item: (item[0] != "", rank.get(item[0], len(rank)), item[0]))
    )


def _link(href: str, locale: str) -> str | None:
    """Where a link in a page of ``locale`` goes in the portal; None when it leaves the guide."""
    if re.match(r"^(https?:|mailto:|#)", href):
        return href
    if re.match(r"^[a-z][a-z0-9+.-]*:", href, re.I) or href.startswith("/"):
        return None
    path, _, fragment = href.partition("#")
    folder = FOLDERS.get(locale, "")
    target = posixpath.normpath(posixpath.join(folder, path)) if path else ""
    stem = target.removesuffix(".md")
    if posixpath.dirname(stem) != folder or not target.endswith(".md"):
        return None
    name = posixpath.basename(stem)
    page = pages(locale).get("" if name == INDEX else name)
    if page is None:
        return None
    return page.url + (f"#{fragment}" if fragment else "")


def _fill(code: str, values: ReaderValues | None) -> str:
    if values is None:
        return code
    code = code.replace(EXAMPLE_HOME, values.container_home).replace(EXAMPLE_ADDRESS, values.address)
    for purpose, example in EXAMPLE_PORTS.items():
        port = values.ports.get(purpose)
        if port is not None:
            code = re.sub(rf"\b{example}\b", str(int(port)), code)
    code = re.sub(rf"\b{EXAMPLE_USER}@", lambda _: f"{values.user}@", code)
    return re.sub(rf"\b{EXAMPLE_NAME}\b", lambda _: values.name, code)


def _rewrite_links(children: list[Token], locale: str) -> list[Token]:
    """Portal links for the guide's own pages; a link that leaves the guide keeps only its text."""
    kept: list[Token] = []
    dropped = 0  # nesting of dropped link_open tokens
    for child in children:
        if child.type == "link_open":
            target = _link(str(child.attrGet("href") or ""), locale)
            if target is None:
                dropped += 1
                continue
            child.attrSet("href", target)
            if target.startswith("http"):
                child.attrSet("rel", "noopener noreferrer")
        elif child.type == "link_close" and dropped:
            dropped -= 1
            continue
        kept.append(child)
    return kept


def render(page: GuidePage, locale: str, values: ReaderValues | None = None) -> Markup:
    """A page as HTML: raw HTML escaped, headings with GitHub's ids, links into the portal, the reader's
    values in the code."""
    md = _md()
    tokens = md.parse(page.source)
    seen: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            anchor = slug(_plain(tokens[i + 1]))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            token.attrSet("id", f"{anchor}-{count}" if count else anchor)
        elif token.type in ("fence", "code_block"):
            token.content = _fill(token.content, values)
        elif token.type == "inline" and token.children:
            for child in token.children:
                if child.type == "code_inline":
                    child.content = _fill(child.content, values)
            token.children = _rewrite_links(token.children, locale)
    return Markup(md.renderer.render(tokens, md.options, {}))  # noqa: S704 - markdown-it escapes all text
