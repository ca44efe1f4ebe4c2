"""What a form's action came to, shown on the page the form is on: the one mechanism of the pages.

A form posts, the route runs the action inside ``with Outcome(...) as out:``, and the page is rendered again
with either the action's notice or its error: a :class:`~labgpu.errors.LabgpuError` raised in the block is
caught, translated for the reader (its template and values: see :func:`labgpu.web.templating.translate`)
and shown with the error's status (400, 404, 409, ...)::

    with Outcome(request, renderer) as out:
        members.set_power(svc, identity.name, action)
        out.done(N_("Your container was started."))
    return out.show(lambda status, **extra: _page(request, renderer, svc, identity, status, **extra))

Anything else raised in the block is not caught: it reaches the app's error handler (a 500 page, logged).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from labgpu.errors import LabgpuError
from labgpu.web.templating import Renderer, translate

# A page builder: (status code, **what the template shows) -> the page.
Page = Callable[..., HTMLResponse]


class Outcome:
    """Collects a form action's notice or error, then renders the page with it (see the module)."""

    def __init__(self, request: Request, renderer: Renderer, *, error_field: str = "error") -> None:
        self.gettext = renderer.gettext(request)
        self.status = 200
        self.error: LabgpuError | None = None
        self.shown: dict[str, Any] = {}
        self._error_field = error_field

    def __enter__(self) -> Outcome:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if isinstance(exc, LabgpuError):
            self.fail(exc)
            return True
        return False

    @property
    def failed(self) -> bool:
        return self.error is not None

    def done(self, notice: str, values: Mapping[str, object] | None = None, **shown: Any) -> None:
        """The action worked: say so (``notice`` is marked N_() and translated here, then filled in)."""
        text = self.gettext(notice)
        self.shown.update(notice=text % values if values else text, **shown)

    def fail(self, error: LabgpuError, **shown: Any) -> None:
        """The action did not work (what the ``with`` block does with a raised error)."""
        self.error = error
        self.status = error.status
        self.shown.update({self._error_field: translate(self.gettext, error)}, **shown)

    def show(self, page: Page, **shown: Any) -> HTMLResponse:
        """The page, with what the action came to (it wins over ``shown``, the page's other values)."""
        return page(self.status, **{**shown, **self.shown})
