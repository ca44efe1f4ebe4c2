"""The project's errors.

Every error a person can cause or meet carries a one-line user message, a short
machine-readable ``reason`` and an HTTP-ish ``status``. The CLI prints the
message and exits 2 for bad input (4xx) or 1 for failures (5xx); the web layer
renders them as JSON under ``/api`` and as an HTML page elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping


def N_(message: str) -> str:
    """Mark a fixed English message for translation; it is translated where it is shown (the portal).

    ``python -m labgpu.web.i18n update`` collects every ``N_("...")`` of the web layer, the services and the
    domain into the catalogs, and the catalog check fails while one has no translation: so editing an
    English message here makes CI ask for its new translation instead of silently showing the English one.
    Values go in ``%(name)s`` placeholders, given separately (``values=`` of :class:`LabgpuError`), so the
    message stays one catalog entry whatever the values are.
    """
    return message


class LabgpuError(Exception):
    """Base class: a failure with a message fit for the user.

    ``message`` may be a template with ``%(name)s`` placeholders filled from ``values``; :attr:`message` is
    the filled English text (what the CLI and the API show), :attr:`template` and :attr:`values` are what
    a page translates.
    """

    status: int = 500
    reason: str = "error"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        log_message: str | None = None,
        values: Mapping[str, object] | None = None,
    ) -> None:
        self.template = message
        self.values = dict(values or {})
        if self.values:
            message = message % self.values
        super().__init__(message)
        self.message = message
        self.hint = hint
        # What goes to the log may say more than what the user sees.
        self.log_message = log_message or message

    @property
    def is_bad_input(self) -> bool:
        return 400 <= self.status < 500

    def __str__(self) -> str:
        return self.message


class BadInput(LabgpuError):
    """The request itself is wrong: a bad name, an unknown option value."""

    status = 400
    reason = "bad-input"


class NotFound(LabgpuError):
    status = 404
    reason = "not-found"


class Conflict(LabgpuError):
    """The request clashes with existing state: a taken name, a used port."""

    status = 409
    reason = "conflict"


class Exhausted(LabgpuError):
    """A finite resource ran out: ports, uids, GPUs."""

    status = 409
    reason = "exhausted"


class ConfigError(LabgpuError):
    """Settings are missing or unsafe; the message says how to fix them."""

    status = 400
    reason = "config"


class Unavailable(LabgpuError):
    """A dependency (the LXD/Incus daemon, the database) cannot be reached."""

    status = 503
    reason = "unavailable"
