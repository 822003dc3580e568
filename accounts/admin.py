from django.contrib import admin

from accounts.models import ApiToken
from lapsite.admin import SecretLookupsRefused


@admin.register(ApiToken)
class ApiTokenAdmin(SecretLookupsRefused, admin.ModelAdmin):
    """Tokens can be looked at (by prefix, never the token) and revoked (deleted); they are
    made with ``manage.py lap_token``, the one place a new token is shown."""

    list_display = ("prefix", "user", "created_at", "last_used_at")
    search_fields = ("user__username", "prefix")
    readonly_fields = ("user", "prefix", "created_at", "last_used_at")
    exclude = ("digest",)

    def has_add_permission(self, request) -> bool:
        return False
