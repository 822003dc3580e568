from django.urls import path

from pool import api

app_name = "pool"

urlpatterns = [
    path("pool", api.PoolApi.as_view(), name="pool"),
]
