"""Read-only admin for the vault: stubs, hosts, records and security events, never a value."""

from __future__ import annotations

from django.contrib import admin

from lapsite.admin import SecretLookupsRefused
from vault.models import InterceptionRecord, SandboxVault, SecurityEvent, VaultKey


class ReadOnlyAdmin(SecretLookupsRefused, admin.ModelAdmin):
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(SandboxVault)
class SandboxVaultAdmin(ReadOnlyAdmin):
    list_display = ("sandbox", "version", "pushed_version", "pushed_at", "records_seq")
    search_fields = ("sandbox__id", "sandbox__session__id")
    # sealing_key is a credential: never shown.
    fields = (
        "sandbox",
        "version",
        "pushed_version",
        "pushed_at",
        "control_url",
        "records_seq",
        "ca_cert_pem",
        "created_at",
    )
    readonly_fields = fields


@admin.register(VaultKey)
class VaultKeyAdmin(ReadOnlyAdmin):
    list_display = ("name", "sandbox", "source", "allowed_hosts")
    list_filter = ("source",)
    search_fields = ("name", "sandbox__id", "sandbox__session__id")
    fields = ("sandbox", "name", "source", "stub", "allowed_hosts")
    readonly_fields = fields


@admin.register(InterceptionRecord)
class InterceptionRecordAdmin(ReadOnlyAdmin):
    list_display = ("time", "session", "method", "host", "path", "decision", "reason", "status")
    list_filter = ("decision", "reason")
    search_fields = ("host", "session__id", "sandbox__id")
    fields = ("session", "sandbox", *InterceptionRecord.REPORTED_FIELDS)
    readonly_fields = fields


@admin.register(SecurityEvent)
class SecurityEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "session", "kind", "host", "credentials")
    list_filter = ("kind",)
    search_fields = ("session__id", "host")
    fields = ("session", "record", "kind", "credentials", "host", "detail", "created_at")
    readonly_fields = fields
