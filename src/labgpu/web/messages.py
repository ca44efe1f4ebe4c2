"""Fixed messages of the services that pages show, marked here so that they are translated.

A service raises its errors in English (the CLI and the API show them as they are); a page passes the
message through :func:`translate`, which finds it in the catalog when it is one of these, and shows it
unchanged otherwise (a message with a name or a number in it).
"""

from __future__ import annotations

from collections.abc import Callable

from labgpu.web.templating import N_

SERVICE_MESSAGES = (
    N_("wrong name or password"),
    N_("this account is disabled; ask an admin to enable it"),
    N_("the current password is not right"),
    N_("the new password is the same as the current one"),
    N_("the password is too short: use at least 8 characters"),
    N_("the password is too long: use at most 1024 characters"),
    N_("the password must not be blank"),
    N_("this password is on the list of the most common passwords: choose another"),
    N_("the password must not contain the account name"),
    N_("a token needs a name of 1 to 64 printable characters"),
    N_("a token lasts 1 to 3650 days (or leave it empty for no expiry)"),
    N_("you have 50 tokens already; revoke one first"),
    N_("the form has expired or did not come from this site; reload the page and try again"),
    N_("log in first, or send a personal API token (Authorization: Bearer lgp_...)"),
    N_("only an admin may do this"),
    N_("you have no container yet"),
    N_("your container has no remote desktop port"),
    N_("internal error; the server log has the details"),
    N_("an e-mail address is required: the decision is sent there"),
    N_("this portal does not take applications; ask an admin of your lab for an account"),
    N_("give the applicant a reason for the rejection"),
    N_("type your name to confirm the reset"),
    N_("type the member's name to confirm the removal"),
    N_("you cannot remove your own account"),
    N_("you cannot disable your own account"),
    N_("no public key given"),
    N_("a member name is required"),
    # Booking forms (web/routes/pages_gpus.py, services/gpus/_booking_requests.py).
    N_("say how many GPUs, or pick them"),
    N_("pick GPUs from the list"),
    N_("day: give a date as YYYY-MM-DD"),
    N_("the note must be one line of printable text"),
    N_("the reason must be printable text"),
    # Provisioning progress of an application (shown on the admin's queue).
    N_("queued"),
    N_("creating the container"),
    N_("waiting for sshd"),
    N_("creating the portal account"),
    N_("done"),
)
_KNOWN = frozenset(SERVICE_MESSAGES)


def translate(gettext: Callable[[str], str], message: str) -> str:
    """``message`` in the request's language when the catalog has it, else as it is."""
    return gettext(message) if message in _KNOWN else message
