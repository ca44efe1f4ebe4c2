"""Notices about applications: to the admins for a new one, to the applicant for the decision (the
approval notice holds the portal's address and the connection sheet, never a container password). They go
through :mod:`labgpu.services.notify`: mail by default, the lab's and the admins' own channels too,
queued and retried.
"""

from __future__ import annotations

import logging

from labgpu.services import members, notify
from labgpu.services.context import Services
from labgpu.services.portal._applications import ApplicationInfo
from labgpu.store.models import ApplicationStatus

log = logging.getLogger(__name__)


# Mail ------------------------------------------------------------------------------------------------


def _portal(svc: Services, path: str = "") -> str:
    base = (svc.settings.portal_url or f"http://{svc.settings.web_host}:{svc.settings.web_port}/").rstrip("/")
    return base + path


def _send(svc: Services, kind: str, *, to: list[str], subject: str, body: str) -> bool:
    return notify.send(svc, kind, to, subject, body) > 0


def notify_admins(svc: Services, app: ApplicationInfo) -> bool:
    """Notify the admins (the lab's channels, each admin's address and own channels) about a new
    application. Queued: never raises, never waits for a channel."""
    lines = [
        f"{app.name} <{app.email}> applied for an account and a container.",
        "",
        f"Supervisor: {app.supervisor or '-'}",
        f"Group:      {app.group_name or '-'}",
        f"Address:    {app.source_address or '-'}",
        "",
        "Reason:",
        app.reason or "-",
        "",
        f"Approve or reject it: {_portal(svc, '/admin/applications')}",
    ]
    return _send(
        svc,
        notify.APPLICATION,
        to=[notify.ADMINS],
        subject=f"[labgpu] new application: {app.name}",
        body="\n".join(lines),
    )


def notify_applicant(svc: Services, app: ApplicationInfo) -> bool:
    """Notify the applicant of the decision: the portal's address and the connection sheet (approved and
    done; on the new member's channels), or the reason (rejected; by mail to the address they gave).
    Never a password. Queued: never raises."""
    if app.status == ApplicationStatus.REJECTED:
        body = "\n".join(
            [
                f"Hello {app.name},",
                "",
                "your application for a lab account was not approved.",
                "",
                "Reason:",
                app.decision_reason or "-",
                "",
                "Reply to your lab's admins if you have questions.",
            ]
        )
        return _send(
            svc,
            notify.APPROVAL,
            to=[app.email],
            subject="[labgpu] your application was not approved",
            body=body,
        )
    if app.status != ApplicationStatus.DONE:
        return False
    sheet = members.connection_sheet(svc, members.get_member(svc, app.name, live=False))
    lines = [
        f"Hello {app.name},",
        "",
        "your application was approved and your container is ready.",
        "",
        f"Log in to the portal with your name ({app.name}) and the password you chose:",
        f"  {_portal(svc, '/login')}",
        "",
    ]
    if sheet is not None:
        lines += [
            "Connect with SSH:",
            f"  {sheet.ssh_command()}",
            "",
            "or add this to ~/.ssh/config:",
            "",
            *("  " + line for line in sheet.ssh_config().splitlines()),
            "",
            "Your container has no password you know yet: on the portal's 'My container' page, add your",
            "SSH public key, or set a first-login password (you change it when you first log in).",
            "",
            f"Your home folder {sheet.container_home} is kept when the container is rebuilt.",
        ]
    return _send(
        svc, notify.APPROVAL, to=[app.name], subject="[labgpu] your container is ready", body="\n".join(lines)
    )
