"""Server-rendered pages: one Jinja2 environment, rendered in the request's language.

Every page gets ``_``/``gettext``/``ngettext`` (Jinja2's i18n extension, new-style: ``_("Hello %(name)s",
name=x)``, autoescaped), ``csrf_token`` (for the hidden field of every form and htmx's header), ``me`` (the
logged-in member or None), ``locale`` and ``locales`` (for the switcher) and ``version``.
"""

from __future__ import annotations

import gettext
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from jinja2.runtime import Context
from markupsafe import Markup

from labgpu import __version__
from labgpu.errors import LabgpuError
from labgpu.web import i18n

TEMPLATES_DIR = Path(__file__).parent / "templates"


def translate(gettext: Callable[[str], str], message: LabgpuError | str) -> str:
    """A message in the request's language: a plain string, or an error's template from the catalog (the
    English one when the catalog lacks it: a message with a name in it is not marked), then its values."""
    if isinstance(message, str):
        return gettext(message)
    text = gettext(message.template)
    if not message.values:
        return text
    try:
        return text % message.values
    except (KeyError, ValueError, TypeError):  # a translation with broken placeholders: the check names it
        return message.message


def _newstyle(translations: gettext.NullTranslations) -> tuple[Callable[..., str], Callable[..., str]]:
    # What Jinja2's install_gettext_callables(newstyle=True) does, per request instead of per environment:
    # translate, mark safe when autoescaping (the variables are escaped by Markup's %), fill in variables.
    @pass_context
    def _gettext(context: Context, message: str, **variables: Any) -> str:
        text = translations.gettext(message)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - our own catalog's text; Markup's % escapes the variables
        return text % variables if variables else text

    @pass_context
    def _ngettext(context: Context, singular: str, plural: str, n: int, **variables: Any) -> str:
        variables.setdefault("num", n)
        text = translations.ngettext(singular, plural, n)
        if context.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 - as above
        return text % variables

    return _gettext, _ngettext


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _size(value: int | None) -> str:
    if not value:
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(value)


def _duration(seconds: int | None) -> str:
    if seconds is None:
        return "—"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m"


class Renderer:
    """Renders templates for a request, in its language, with the values every page needs."""

    def __init__(
        self,
        *,
        csrf_token: Callable[[Request], str],
        identity: Callable[[Request], Any],
        notices: Callable[[Request], list[Any]] | None = None,
    ) -> None:
        self.env = Environment(
            loader=FileSystemLoader(str(TEMPLATES_DIR)),
            autoescape=select_autoescape(["html"]),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        # Sets the extension's new-style flag; the real callables are passed with each render.
        self.env.install_null_translations(newstyle=True)  # type: ignore[attr-defined]
        self.env.filters["when"] = _when
        self.env.filters["size"] = _size
        self.env.filters["duration"] = _duration
        self._csrf_token = csrf_token
        self._identity = identity
        self._notices = notices

    def locale(self, request: Request) -> str:
        cached = getattr(request.state, "locale", None)
        if isinstance(cached, str):
            return cached
        locale = i18n.choose_locale(
            request.cookies.get(i18n.LANG_COOKIE), request.headers.get("accept-language")
        )
        request.state.locale = locale
        return locale

    def gettext(self, request: Request) -> Callable[[str], str]:
        """A plain gettext for the request's language (for Python code that builds messages)."""
        return i18n.translations(self.locale(request)).gettext

    def render(
        self, request: Request, template: str, status_code: int = 200, /, **context: Any
    ) -> HTMLResponse:
        locale = self.locale(request)
        gettext_, ngettext_ = _newstyle(i18n.translations(locale))
        values = {
            "request": request,
            "_": gettext_,
            "gettext": gettext_,
            "ngettext": ngettext_,
            "csrf_token": self._csrf_token(request),
            "me": self._identity(request),
            "locale": locale,
            "html_lang": i18n.LOCALES[locale][1],
            "locales": {key: value[0] for key, value in i18n.LOCALES.items()},
            "version": __version__,
            "path": request.url.path,
            "notices": self._notices(request) if self._notices else [],
            **context,
        }
        html = self.env.get_template(template).render(values)
        response = HTMLResponse(html, status_code=status_code)
        response.headers["Content-Language"] = i18n.LOCALES[locale][1]
        response.headers["Vary"] = "Accept-Language, Cookie"
        return response
