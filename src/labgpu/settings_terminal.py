"""The settings of the terminal in the browser, declared beside each other so that "what does this setting
affect" needs no grep. :class:`Settings` (``labgpu.settings``) takes them in as they are:
``terminal_idle_minutes`` is ``LABGPU_TERMINAL_IDLE_MINUTES`` and so on. Used by
``services/members/_terminal_bridge.py`` and ``web/routes/members/terminal.py``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TerminalSettings(BaseModel):
    """The terminal in the browser: when it closes, and how many an account may open; see
    docs/admin/portal.md, "The terminal in the browser"."""

    terminal_idle_minutes: float = Field(
        30,
        gt=0,
        description="A terminal in the browser closes after this many minutes without a keystroke, paste or "
        "resize from the browser (output alone does not count). Programs started in tmux or screen keep "
        "running; the shell itself ends.",
    )
    terminal_max_open: int = Field(
        10, ge=1, description="Terminals in the browser one account may have open at once; more are refused."
    )
    terminal_opens_per_minute: int = Field(
        30,
        ge=1,
        description="Terminals one account may open within a minute; more are refused (HTTP 429) until the "
        "minute has passed.",
    )
    terminal_recheck_seconds: float = Field(
        30,
        gt=0,
        description="How often an open terminal checks that its login is still good (not logged out elsewhere, "
        "expired or disabled); a logout in the portal itself closes the terminal at once.",
    )
