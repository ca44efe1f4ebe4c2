"""Typed errors for the LXD/Incus API, and the one place responses map to them."""

from __future__ import annotations

from typing import Any

import httpx

from labgpu.errors import BadInput, Conflict, LabgpuError, NotFound, Unavailable


class RuntimeError_(LabgpuError):
    """The daemon answered with an error we did not expect."""

    reason = "runtime-error"


class RuntimeUnavailable(Unavailable):
    """The daemon cannot be reached (not running, wrong address, TLS refused)."""

    reason = "runtime-unavailable"


class RuntimeNotFound(NotFound):
    reason = "runtime-not-found"


class RuntimeConflict(Conflict):
    reason = "runtime-conflict"


class RuntimeBadRequest(BadInput):
    reason = "runtime-bad-request"


class RuntimeForbidden(LabgpuError):
    status = 403
    reason = "runtime-forbidden"


class OperationFailed(RuntimeError_):
    """A background operation ended in failure."""

    reason = "operation-failed"


class OperationTimeout(RuntimeError_):
    """We stopped waiting for a background operation; it may still be running."""

    status = 504
    reason = "operation-timeout"


def _names_taken(message: str) -> bool:
    # LXD 5.0 answers 400, 500 or a failed operation for a taken name, Incus 6.0
    # a 500 from its database; the text is the one clue they share.
    return "already exists" in message or "UNIQUE constraint failed" in message


def error_from_status(code: int, message: str) -> LabgpuError:
    """Map an API status code and error text to a typed error."""
    if code == 404:
        return RuntimeNotFound(message)
    if code == 409:
        return RuntimeConflict(message)
    if code == 403:
        return RuntimeForbidden(message)
    if _names_taken(message):
        return RuntimeConflict(message)
    if 400 <= code < 500:
        return RuntimeBadRequest(message)
    return RuntimeError_(message)


def error_from_operation(message: str) -> LabgpuError:
    """Map a failed background operation to a typed error.

    Some daemons (LXD 5.0) report a taken name only when the create operation
    fails, so the text is the only clue left."""
    if _names_taken(message):
        return RuntimeConflict(message)
    return OperationFailed(message)


def raise_for_response(response: httpx.Response, what: str) -> dict[str, Any]:
    """Return the decoded body of a good response, raise a typed error otherwise.

    ``what`` names the request for the message ("create instance alice").
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict) and body.get("type") != "error":
        return body
    if response.is_success and body is None:
        # Raw endpoints (file pull, exec logs) are checked by their callers.
        return {}
    if isinstance(body, dict):
        message = str(body.get("error") or response.reason_phrase)
        code = int(body.get("error_code") or response.status_code)
    else:
        message, code = response.text.strip() or response.reason_phrase, response.status_code
    raise error_from_status(code, f"{what}: {message}")
