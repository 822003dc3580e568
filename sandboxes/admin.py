from __future__ import annotations

from django.contrib import admin, messages

from lapsite.admin import SecretLookupsRefused
from sandboxes import services
from sandboxes.models import Sandbox, Session, SessionMessage


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class SessionMessageInline(ReadOnlyMixin, admin.TabularInline):
    model = SessionMessage
    fields = ("seq", "role", "status", "parts", "created_at", "completed_at")
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Session)
class SessionAdmin(SecretLookupsRefused, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "agent", "harness_id", "status", "phase", "created_at", "last_seen_at")
    list_filter = ("status", "harness_id", "agent")
    search_fields = ("id", "title", "agent__name", "failure_reason")
    list_select_related = ("agent",)
    # env_vars (encrypted secrets) is left out; only names are shown.
    fields = (
        "id",
        "agent",
        "harness_id",
        "status",
        "phase",
        "phase_detail",
        "failure_reason",
        "title",
        "initial_prompt",
        "secret_names",
        "created_by",
        "created_at",
        "last_seen_at",
        "stopped_at",
    )
    readonly_fields = fields
    inlines = [SessionMessageInline]
    actions = ["stop_sessions"]

    @admin.display(description="secrets (names only)")
    def secret_names(self, session: Session) -> str:
        return ", ".join(sorted(session.env_vars)) or "—"

    @admin.action(description="Stop selected sessions", permissions=["stop"])
    def stop_sessions(self, request, queryset) -> None:
        stopped = sum(services.session_stop(session) for session in queryset)
        self.message_user(request, f"Stopped {stopped} session(s).", messages.SUCCESS)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_stop_permission(self, request) -> bool:
        # The form is read-only for everyone, but stopping is a change: a user who may only
        # view sessions must not stop them.
        return request.user.has_perm("sandboxes.change_session")


@admin.register(Sandbox)
class SandboxAdmin(SecretLookupsRefused, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "session",
        "driver",
        "state",
        "harness_id",
        "pool_state",
        "created_at",
        "destroyed_at",
    )
    list_filter = ("driver", "state", "pool_state", "harness_id")
    search_fields = ("id", "ref", "session__id")
    fields = (
        "id",
        "session",
        "driver",
        "ref",
        "runner_url",
        "state",
        "labels",
        "harness_id",
        "pool_state",
        "failure_reason",
        "created_at",
        "ready_at",
        "claimed_at",
        "destroyed_at",
    )  # runner_token is a credential: never shown
    readonly_fields = fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
