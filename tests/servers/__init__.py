"""Real sign-on servers for the tests, each started on a free loopback port by a session fixture
(``fixtures.py``): OpenLDAP's slapd with a temporary database, and a small Django project (``idp/``) that
runs two real provider implementations, django-oidc-provider (OpenID Connect) and django-cas-server
(CAS 2.0/3.0)."""
