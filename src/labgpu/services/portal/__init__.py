"""portal: the people side of the web portal.

Accounts and roles, log-in sessions and their throttling, passwords (argon2id), personal API tokens,
applications for an account and their provisioning, notices, and the audit log of every admin action;
two-factor log-in (TOTP: ``_totp``, ``_totp_enrol``, ``_totp_login``). The public face of ``services/portal``: cli/, web/ and ops import only this module.
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
    start_session,
)
from labgpu.services.portal._notices import (
    active_notices,
    add_notice,
    list_notices,
    parse_when,
    remove_notice,
)
from labgpu.services.portal._passwords import WeakPassword, check_password_strength
from labgpu.services.portal._provisioning import ProvisionWorker, provision_application
from labgpu.services.portal._tokens import TokenInfo, create_token, list_tokens, resolve_token, revoke_token

# Two-factor log-in (TOTP) -------------------------------------------------------------------------------
from labgpu.services.portal._totp import (
    SecondStep,
    TotpEnrolmentRequired,
    WrongCode,
    enrolment_required_error,
    with_second_factor_rule,
)
from labgpu.services.portal._totp_enrol import (
    TotpSetup,
    TotpStatus,
    confirm_totp,
    disable_totp,
    renew_recovery_codes,
    reset_totp,
    start_totp_setup,
    totp_members,
    totp_status,
)
from labgpu.services.portal._totp_login import (
    LoginExpired,
    PendingInfo,
    SecondStepDone,
    finish_login,
    pending_login,
)

__all__ = [
    "MAX_PAGE",
    "AccountInfo",
    "ApplicationInfo",
    "AuditEntry",
    "Forbidden",
    "Identity",
    "LoginExpired",
    "LoginFailed",
    "PendingInfo",
    "ProvisionWorker",
    "SecondStep",
    "SecondStepDone",
    "Throttled",
    "TokenInfo",
    "TotpEnrolmentRequired",
    "TotpSetup",
    "TotpStatus",
    "Unauthenticated",
    "WeakPassword",
    "WrongCode",
    "active_notices",
    "add_notice",
    "approve",
    "authenticate",
    "change_password",
    "check_password_strength",
    "confirm_totp",
    "create_account",
    "create_token",
    "disable_totp",
    "end_all_sessions",
    "end_session",
    "enrolment_required_error",
    "finish_login",
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
    "pending_login",
    "provision_application",
    "reject",
    "remove_notice",
    "renew_recovery_codes",
    "reset_totp",
    "resolve_session",
    "resolve_token",
    "retry",
    "revoke_token",
    "set_disabled",
    "set_password",
    "start_session",
    "start_totp_setup",
    "submit",
    "totp_members",
    "totp_status",
    "with_second_factor_rule",
]
