"""portal: the people side of the web portal.

Accounts and roles, log-in sessions and their throttling, passwords (argon2id), personal API tokens,
applications for an account and their provisioning, notices, and the audit log of every admin action. The
public face of ``services/portal``: cli/, web/ and ops import only this module.
"""

from __future__ import annotations

from labgpu.services.portal._accounts import (
    AccountInfo,
    Forbidden,
    Identity,
    Unauthenticated,
    create_account,
    get_account,
    list_accounts,
    set_disabled,
    set_password,
)
from labgpu.services.portal._application_mail import notify_admins, notify_applicant
from labgpu.services.portal._applications import (
    ApplicationInfo,
    approve,
    get_application,
    list_applications,
    parse_overrides,
    reject,
    retry,
    submit,
)
from labgpu.services.portal._audit import MAX_PAGE, AuditEntry, list_events
from labgpu.services.portal._logins import (
    LoginFailed,
    Throttled,
    authenticate,
    change_password,
    end_all_sessions,
    end_session,
    list_sessions,
    resolve_session,
    resolve_session_id,
    start_session,
)
from labgpu.services.portal._notices import (
    active_notices,
    add_notice,
    list_notices,
    parse_when,
    remove_notice,
)
from labgpu.services.portal._provisioning import ProvisionWorker, provision_application
from labgpu.services.portal._tokens import TokenInfo, create_token, list_tokens, resolve_token, revoke_token

__all__ = [
    "MAX_PAGE",
    "AccountInfo",
    "ApplicationInfo",
    "AuditEntry",
    "Forbidden",
    "Identity",
    "LoginFailed",
    "ProvisionWorker",
    "Throttled",
    "TokenInfo",
    "Unauthenticated",
    "active_notices",
    "add_notice",
    "approve",
    "authenticate",
    "change_password",
    "create_account",
    "create_token",
    "end_all_sessions",
    "end_session",
    "get_account",
    "get_application",
    "list_accounts",
    "list_applications",
    "list_events",
    "list_notices",
    "list_sessions",
    "list_tokens",
    "notify_admins",
    "notify_applicant",
    "parse_overrides",
    "parse_when",
    "provision_application",
    "reject",
    "remove_notice",
    "resolve_session",
    "resolve_session_id",
    "resolve_token",
    "retry",
    "revoke_token",
    "set_disabled",
    "set_password",
    "start_session",
    "submit",
]
