"""A small Django project that runs two real identity-provider implementations for the sign-on tests:
django-oidc-provider (OpenID Connect: discovery, authorization code with PKCE, nonce, JWKS) under
/openid, and django-cas-server (CAS 2.0 and 3.0 serviceValidate, attributes) under /cas. Its users log in
with Django's own log-in form. Started by ``tests/servers/fixtures.py`` (``python -m
tests.servers.idp.serve``)."""
