"""portal: the people side of the web portal.

Accounts and roles, sign-on (LDAP, OIDC, CAS) and its identities, log-in sessions and their throttling,
passwords (argon2id), two-factor log-in (TOTP: ``_totp``, ``_totp_enrol``, ``_totp_login``), personal API
tokens, applications for an account and their provisioning, notices, and the audit log of every admin action.
The public face of ``services/portal``: cli/, web/ and ops import only this module.
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
from labgpu.services.portal._authtest import BackendVerdict, check_backends
from labgpu.services.portal._cas import cas_enabled, cas_login_url, cas_validate
from labgpu.services.portal._claims import BackendDown, Claims, SignOnFailed
from labgpu.services.portal._complete import Proof, complete_login
from labgpu.services.portal._identities import (
    Unlinked,
    Waiting,
    apply_with_identity,
    group_verdict,
    name_problem,
    suggest_name,
)
from labgpu.services.portal._ldap import ldap_enabled
from labgpu.services.portal._logins import (
    LoginFailed,
    NewLogin,
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
from labgpu.services.portal._oidc import OidcFlow, oidc_begin, oidc_finish, oidc_provider
from labgpu.services.portal._passwords import WeakPassword, check_password_strength
from labgpu.services.portal._provisioning import ProvisionWorker, provision_application
from labgpu.services.portal._signon import (
    check_signon_throttle,
    link_with_password,
    password_login,
    record_signon_failure,
    signon_login,
)
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
    "BackendDown",
    "BackendVerdict",
    "Claims",
    "Forbidden",
    "Identity",
    "LoginExpired",
    "LoginFailed",
    "NewLogin",
    "OidcFlow",
    "PendingInfo",
    "Proof",
    "ProvisionWorker",
    "SecondStep",
    "SecondStepDone",
    "SignOnFailed",
    "Throttled",
    "TokenInfo",
    "TotpEnrolmentRequired",
    "TotpSetup",
    "TotpStatus",
    "Unauthenticated",
    "Unlinked",
    "Waiting",
    "WeakPassword",
    "WrongCode",
    "active_notices",
    "add_notice",
    "apply_with_identity",
    "approve",
    "authenticate",
    "cas_enabled",
    "cas_login_url",
    "cas_validate",
    "change_password",
    "check_backends",
    "check_password_strength",
    "check_signon_throttle",
    "complete_login",
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
    "group_verdict",
    "ldap_enabled",
    "link_with_password",
    "list_accounts",
    "list_applications",
    "list_events",
    "list_notices",
    "list_sessions",
    "list_tokens",
    "name_problem",
    "notify_admins",
    "notify_applicant",
    "oidc_begin",
    "oidc_finish",
    "oidc_provider",
    "parse_overrides",
    "parse_when",
    "password_login",
    "pending_login",
    "provision_application",
    "record_signon_failure",
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
    "signon_login",
    "start_session",
    "start_totp_setup",
    "submit",
    "suggest_name",
    "totp_members",
    "totp_status",
    "with_second_factor_rule",
]
