"""OpenID Connect log-in (authlib's OAuth 2 client, joserfc for the ID token): the authorization code
flow with PKCE (S256), ``state`` and ``nonce``, the provider's endpoints and keys found by discovery from
its issuer.

:func:`oidc_begin` makes the provider's URL and an :class:`OidcFlow` (the state, nonce and PKCE
verifier) that the browser keeps until it comes back; :func:`oidc_finish` checks that the answer
belongs to that flow, exchanges the code (with the verifier), verifies the ID token's signature against
the provider's published keys, its issuer, audience, expiry and nonce, and reads the person's claims
(from the ID token, and the userinfo endpoint where there is one).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc6749.errors import OAuth2Error
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from labgpu.errors import N_, NotFound
from labgpu.services.portal._claims import (
    BACKEND_DOWN,
    BackendDown,
    Claims,
    SignOnFailed,
    clean_groups,
    clean_text,
)
from labgpu.settings import Settings
from labgpu.settings_signon import OidcProvider

# Signatures the ID token may carry: asymmetric only (the provider's published keys).
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
STALE = N_("the sign-on answer does not belong to this log-in (it is old, or was changed); log in again")


@dataclass(frozen=True)
class OidcFlow:
    """What the browser keeps (signed, in a cookie) between leaving for the provider and coming back."""

    provider: str
    state: str
    nonce: str
    code_verifier: str


def oidc_provider(settings: Settings, name: str) -> OidcProvider:
    """The configured provider called ``name``. Raises NotFound."""
    for provider in settings.oidc_providers:
        if provider.name == name:
            return provider
    raise NotFound(N_("no sign-on provider %(name)s"), values={"name": name[:40]})


def _label(provider: OidcProvider) -> str:
    return provider.label or provider.name


def _http(settings: Settings, provider: OidcProvider) -> httpx.Client:
    verify: Any = str(provider.ca_file) if provider.ca_file else True
    return httpx.Client(timeout=settings.signon_timeout, verify=verify, follow_redirects=False)


def _get_json(settings: Settings, provider: OidcProvider, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        with _http(settings, provider) as client:
            response = client.get(url, **kwargs)
            response.raise_for_status()
            data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise BackendDown(
            BACKEND_DOWN,
            values={"backend": _label(provider)},
            log_message=f"OIDC {provider.name}: {url}: {type(exc).__name__}: {exc}",
        ) from None
    if not isinstance(data, dict):
        raise BackendDown(BACKEND_DOWN, values={"backend": _label(provider)}, log_message=f"{url}: not JSON")
    return data


def discover(settings: Settings, provider: OidcProvider) -> dict[str, Any]:
    """The provider's metadata (ISSUER/.well-known/openid-configuration), its issuer checked."""
    issuer = provider.issuer.rstrip("/")
    meta = _get_json(settings, provider, issuer + "/.well-known/openid-configuration")
    if str(meta.get("issuer", "")).rstrip("/") != issuer or not all(
        isinstance(meta.get(k), str) for k in ("authorization_endpoint", "token_endpoint", "jwks_uri")
    ):
        raise BackendDown(
            BACKEND_DOWN,
            values={"backend": _label(provider)},
            log_message=f"OIDC {provider.name}: discovery names issuer {meta.get('issuer')!r}, not {issuer!r}",
        )
    return meta


def _client(settings: Settings, provider: OidcProvider, redirect_uri: str) -> OAuth2Client:
    verify: Any = str(provider.ca_file) if provider.ca_file else True
    return OAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret.get_secret_value() if provider.client_secret else None,
        scope=provider.scopes,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="client_secret_basic" if provider.client_secret else "none",
        timeout=settings.signon_timeout,
        verify=verify,
    )


def oidc_begin(settings: Settings, name: str, redirect_uri: str) -> tuple[str, OidcFlow]:
    """Where to send the browser for provider ``name``, and the flow it must come back with.
    Raises NotFound, BackendDown (discovery failed)."""
    provider = oidc_provider(settings, name)
    meta = discover(settings, provider)
    flow = OidcFlow(
        provider=provider.name,
        state=secrets.token_urlsafe(32),
        nonce=secrets.token_urlsafe(32),
        code_verifier=secrets.token_urlsafe(64),
    )
    with _client(settings, provider, redirect_uri) as client:
        url, _ = client.create_authorization_url(
            meta["authorization_endpoint"],
            state=flow.state,
            code_verifier=flow.code_verifier,
            nonce=flow.nonce,
        )
    return str(url), flow


def oidc_finish(
    settings: Settings, flow: OidcFlow, *, state: str, code: str, error: str, redirect_uri: str
) -> Claims:
    """The person the provider vouches for in its answer (``state``, ``code`` or ``error`` from the
    callback's query) to ``flow``. Raises SignOnFailed (a wrong state, the provider's refusal, a bad ID
    token or nonce), BackendDown."""
    provider = oidc_provider(settings, flow.provider)
    if not state or not hmac.compare_digest(state.encode(), flow.state.encode()):
        raise SignOnFailed(STALE, log_message=f"OIDC {provider.name}: state does not match")
    if error or not code:
        raise SignOnFailed(
            N_("%(backend)s did not log you in; try again"),
            values={"backend": _label(provider)},
            log_message=f"OIDC {provider.name}: error {error[:80]!r}",
        )
    meta = discover(settings, provider)
    try:
        with _client(settings, provider, redirect_uri) as client:
            token = client.fetch_token(
                meta["token_endpoint"], code=code, code_verifier=flow.code_verifier, state=state
            )
    except (OAuth2Error, OAuthError) as exc:  # the provider refused the code (used, or a wrong PKCE verifier)
        raise SignOnFailed(STALE, log_message=f"OIDC {provider.name}: token: {exc.error}") from None
    except httpx.HTTPError as exc:
        raise BackendDown(
            BACKEND_DOWN, values={"backend": _label(provider)}, log_message=f"OIDC token: {exc}"
        ) from None
    claims = _verify_id_token(settings, provider, meta, token, flow.nonce)
    userinfo = meta.get("userinfo_endpoint")
    if isinstance(userinfo, str) and token.get("access_token"):
        extra = _get_json(
            settings, provider, userinfo, headers={"Authorization": f"Bearer {token['access_token']}"}
        )
        if extra.get("sub") == claims.get("sub"):
            claims = {**extra, **claims}
    return _claims(provider, claims)


def _verify_id_token(
    settings: Settings, provider: OidcProvider, meta: dict[str, Any], token: dict[str, Any], nonce: str
) -> dict[str, Any]:
    id_token = token.get("id_token")
    if not isinstance(id_token, str):
        raise SignOnFailed(STALE, log_message=f"OIDC {provider.name}: no id_token in the answer")
    keys = KeySet.import_key_set(_get_json(settings, provider, meta["jwks_uri"]))  # type: ignore[arg-type]
    try:
        decoded = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": meta["issuer"]},
            aud={"essential": True, "value": provider.client_id},
            sub={"essential": True},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(decoded.claims)
    except (JoseError, ValueError) as exc:
        raise SignOnFailed(
            STALE, log_message=f"OIDC {provider.name}: ID token refused: {type(exc).__name__}: {exc}"
        ) from None
    claims = dict(decoded.claims)
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != provider.client_id:
        raise SignOnFailed(STALE, log_message=f"OIDC {provider.name}: azp is not this client")
    return claims


def _claims(provider: OidcProvider, claims: dict[str, Any]) -> Claims:
    subject = clean_text(claims.get("sub"), 255)
    if subject is None:
        raise SignOnFailed(STALE, log_message=f"OIDC {provider.name}: no usable sub")
    return Claims(
        provider=f"oidc:{provider.name}",
        subject=subject,
        name=clean_text(claims.get(provider.name_claim), 64) or "",
        email=clean_text(claims.get(provider.email_claim), 254),
        display_name=clean_text(claims.get(provider.display_name_claim), 128),
        groups=clean_groups(claims.get(provider.groups_claim)),
    )
