from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def allow_redirect(request: HttpRequest) -> HttpResponse:
    """Test set-up only: add a redirect URI to the labgpu client (the portal's port is chosen late)."""
    from oidc_provider.models import Client

    uri = request.GET.get("uri", "")
    client = Client.objects.get(client_id="labgpu")
    if uri and uri not in client.redirect_uris:
        client.redirect_uris = [*client.redirect_uris, uri]
        client.save()
    return HttpResponse("ok", content_type="text/plain")


urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("openid/", include("oidc_provider.urls", namespace="oidc_provider")),
    path("cas/", include("cas_server.urls", namespace="cas_server")),
    path("testing/allow-redirect", allow_redirect),
]
