from django.urls import path

from vault import api

app_name = "vault"

urlpatterns = [
    path(
        "sessions/<str:session_id>/vault-keys",
        api.SessionVaultKeysApi.as_view(),
        name="session-vault-keys",
    ),
    path(
        "sessions/<str:session_id>/interceptions",
        api.SessionInterceptionsApi.as_view(),
        name="session-interceptions",
    ),
    path(
        "sessions/<str:session_id>/security-events",
        api.SessionSecurityEventsApi.as_view(),
        name="session-security-events",
    ),
]
