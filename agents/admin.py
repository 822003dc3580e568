from __future__ import annotations

from django import forms
from django.contrib import admin

from agents import services
from agents.harnesses import harness_ids
from agents.models import Agent
from agents.validation import agent_errors
from lapsite.admin import SecretLookupsRefused
from vault import crypto

EDITABLE = (
    "name",
    "model",
    "harness_id",
    "prompt",
    "repo_url",
    "branch",
    "env_var_hosts",
    "allow_out",
    "deny_out",
    "stop_on_vault_block",
)


def _is_host_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(host, str) for host in value)


class AgentAdminForm(forms.ModelForm):
    """Edits everything but secret values, which the admin never shows or takes."""

    harness_id = forms.ChoiceField(choices=[(harness, harness) for harness in harness_ids()])

    class Meta:
        model = Agent
        fields = EDITABLE

    # The JSON boxes take any JSON; the shape is checked before agent_errors, which expects
    # the API's (a dict there, or a string, would be read key by key or char by char).
    def clean_env_var_hosts(self) -> dict | None:
        hosts = self.cleaned_data["env_var_hosts"]
        if hosts is not None and not (
            isinstance(hosts, dict) and all(_is_host_list(value) for value in hosts.values())
        ):
            raise forms.ValidationError('must map names to lists of hosts: {"NAME": ["host"]}')
        return hosts

    def clean_allow_out(self) -> list | None:
        return self._host_list("allow_out")

    def clean_deny_out(self) -> list | None:
        return self._host_list("deny_out")

    def _host_list(self, field: str) -> list | None:
        rules = self.cleaned_data[field]
        if rules is not None and not _is_host_list(rules):
            raise forms.ValidationError('must be a list of hosts: ["host", "*.example.com"]')
        return rules

    def clean(self) -> dict:
        data = super().clean()
        env_plain = crypto.decrypt_map(self.instance.env_vars) if self.instance.pk else {}
        problems = agent_errors(
            name=data.get("name", ""),
            harness_id=data.get("harness_id", ""),
            prompt=data.get("prompt", ""),
            repo_url=data.get("repo_url", ""),
            branch=data.get("branch", ""),
            env_vars=env_plain,
            env_var_hosts=data.get("env_var_hosts") or {},
            allow_out=data.get("allow_out") or [],
            deny_out=data.get("deny_out") or [],
        )
        for field, messages in problems.items():
            self.add_error(field if field in self.fields else None, messages)
        return data


@admin.register(Agent)
class AgentAdmin(SecretLookupsRefused, admin.ModelAdmin):
    form = AgentAdminForm
    list_display = ("name", "harness_id", "model", "secret_names", "created_by", "created_at")
    list_filter = ("harness_id",)
    search_fields = ("name", "id", "harness_id", "model")
    readonly_fields = ("id", "secret_names", "created_by", "created_at")

    @admin.display(description="secrets (names only)")
    def secret_names(self, agent: Agent) -> str:
        return ", ".join(services.env_var_names(agent)) or "—"

    def save_model(self, request, obj: Agent, form: AgentAdminForm, change: bool) -> None:
        fields = {field: form.cleaned_data[field] for field in EDITABLE}
        # An emptied JSON box cleans to None; the model stores empty collections.
        fields["env_var_hosts"] = fields["env_var_hosts"] or {}
        fields["allow_out"] = fields["allow_out"] or []
        fields["deny_out"] = fields["deny_out"] or []
        if change:
            services.agent_update(Agent.objects.get(pk=obj.pk), **fields)
        else:
            obj.pk = services.agent_create(user=request.user, **fields).pk

    def get_deleted_objects(self, objs, request):
        # Sessions (and their records) go with their agent, and agent_delete stops them
        # first; the admin's refusal to delete sessions on their own must not block that.
        deleted, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, counts, set(), protected

    def delete_model(self, request, obj: Agent) -> None:
        services.agent_delete(obj)

    def delete_queryset(self, request, queryset) -> None:
        for agent in queryset:
            services.agent_delete(agent)
