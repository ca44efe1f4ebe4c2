"""The app's open terminals (``app.state.terminals``), for the routes that end logins: a logout closes the
session's terminals at once, a logout everywhere and a disabled account close all of the account's."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from labgpu.services import members


def terminals_of(connection: HTTPConnection) -> members.Terminals:
    """The app's registry of open terminals."""
    registry: members.Terminals = connection.app.state.terminals
    return registry


def end_terminals(
    connection: HTTPConnection, *, session_id: str | None = None, account: str | None = None
) -> None:
    """Close the terminals of a login session, or of an account (after a logout, a disable)."""
    registry = terminals_of(connection)
    if session_id is not None:
        registry.end_session(session_id)
    if account is not None:
        registry.end_account(account)
