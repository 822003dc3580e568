from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from lapsite import health
from lapsite.schema import SchemaView

API = "api/v1/managed_agents/"

# API paths answer in the one error shape even when no view ran (lapsite/api.py).
handler400 = "lapsite.api.handler400"
handler404 = "lapsite.api.handler404"
handler500 = "lapsite.api.handler500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", health.HealthzView.as_view(), name="healthz"),
    path("metrics", health.metrics_view, name="metrics"),
    path(
        "api/schema/",
        SchemaView.as_view(),
        name="schema",
    ),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(API, include("agents.urls")),
    path(API, include("sandboxes.urls")),
    path(API, include("vault.urls")),
    path(API, include("pool.urls")),
    path("", include("webui.urls")),
]
