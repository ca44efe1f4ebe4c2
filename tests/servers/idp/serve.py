"""Run the test identity provider: ``python -m tests.servers.idp.serve PORT`` (with LABGPU_TEST_IDP_DIR
set to a fresh folder). Creates its database, the users of ``USERS``, an RSA signing key, the OIDC client
``labgpu`` (secret ``CLIENT_SECRET``) and a CAS service pattern for loopback portals, then serves."""

from __future__ import annotations

import os
import sys

CLIENT_ID = "labgpu"
CLIENT_SECRET = "oidc-client-secret-for-tests-7f3a"
# username: (full name, e-mail, password, groups)
USERS = {
    "olivia": ("Olivia Sun", "olivia@idp.test", "olivia-idp-pass-4", ["gpu-users"]),
    "oscar": ("Oscar Li", "oscar@idp.test", "oscar-idp-pass-4", ["gpu-users", "gpu-admins"]),
    "casey": ("Casey Ma", "casey@idp.test", "casey-idp-pass-4", ["gpu-users"]),
}


def seed() -> None:
    from cas_server.models import ReplaceAttributName, ServicePattern
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from oidc_provider.models import Client, ResponseType

    call_command("migrate", verbosity=0, interactive=False)
    call_command("creatersakey", verbosity=0)
    for username, (full_name, email, password, groups) in USERS.items():
        user = User.objects.create_user(username, email=email, password=password, first_name=full_name)
        for name in groups:
            user.groups.add(Group.objects.get_or_create(name=name)[0])
    client = Client.objects.create(
        name="labgpu",
        client_type="confidential",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        require_consent=False,
        reuse_consent=True,
        _redirect_uris="http://testserver/login/oidc/idp/callback",
        _scope="openid email profile groups",
    )
    client.response_types.add(ResponseType.objects.get(value="code"))
    pattern = ServicePattern.objects.create(
        pos=1, name="labgpu", pattern=r"^http://(testserver|127\.0\.0\.1:[0-9]+)/.*$"
    )
    for name, replace in (("email", "mail"), ("first_name", "displayName"), ("groups", "memberOf")):
        ReplaceAttributName.objects.create(name=name, replace=replace, service_pattern=pattern)


def main() -> None:
    port = sys.argv[1]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.servers.idp.settings")
    import django

    django.setup()
    seed()
    from django.core.management import call_command

    call_command("runserver", f"127.0.0.1:{port}", use_reloader=False, verbosity=0)


if __name__ == "__main__":
    main()
