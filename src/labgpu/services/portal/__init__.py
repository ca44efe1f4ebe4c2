"""portal: the people side of the web portal.

Accounts and roles, sign-on (LDAP, OIDC, CAS) and its identities, log-in sessions and their throttling, passwords (argon2id), personal API tokens,
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
from labgpu.services.portal._provisioning import ProvisionWorker, provision_application
from labgpu.services.portal._signon import (
    check_signon_throttle,
    link_with_password,
    password_login,
    record_signon_failure,
    signon_login,
)
from labgpu.services.portal._tokens import TokenInfo, create_token, list_tokens, resolve_token, revoke_token

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
    "LoginFailed",
    "NewLogin",
    "OidcFlow",
    "Proof",
    "ProvisionWorker",
    "SignOnFailed",
    "Throttled",
    "TokenInfo",
    "Unauthenticated",
    "Unlinked",
    "Waiting",
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
    "check_signon_throttle",
    "complete_login",
    "create_account",
    "create_token",
    "end_all_sessions",
    "end_session",
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
    "provision_application",
    "record_signon_failure",
    "reject",
    "remove_notice",
    "resolve_session",
    "resolve_token",
    "retry",
    "revoke_token",
    "set_disabled",
    "set_password",
    "signon_login",
    "start_session",
    "submit",
    "suggest_name",
]
