"""The web UI's forms. They shape browser input into the arguments of the services; the
rules an agent must satisfy live in ``agents.validation`` and are applied by the views."""

from __future__ import annotations

import re

from django import forms

from agents.harnesses import HARNESSES
from agents.models import Agent
from sandboxes.models import Session

_LIST_SEPARATORS = re.compile(r"[\s,]+")


class RuleListField(forms.CharField):
    """Host rules typed one per line (or separated by commas); cleans to a list of strings."""

    def to_python(self, value: str | None) -> list[str]:
        return [rule for rule in _LIST_SEPARATORS.split(value or "") if rule]

    def prepare_value(self, value: object) -> object:
        return "\n".join(value) if isinstance(value, list) else value

    def has_changed(self, initial: object, data: object) -> bool:
        # Compared as lists: Django's string comparison took a blank box for a change
        # ("" against []), so a formset's blank extra row was validated and refused.
        before = initial if isinstance(initial, list) else self.to_python(str(initial or ""))
        return before != self.to_python(str(data or ""))


def _harness_label(harness_id: str) -> str:
    harness = HARNESSES[harness_id]
    return f"{harness.title} — {'terminal' if harness.supports_tui else 'chat'}"


class AgentForm(forms.Form):
    """Every field of an agent except its secrets, which ``SecretFormSet`` carries."""

    name = forms.fields_for_model(Agent, fields=["name"])["name"]
    harness_id = forms.ChoiceField(
        label="Harness", choices=[(harness, _harness_label(harness)) for harness in HARNESSES]
    )
    model = forms.fields_for_model(Agent, fields=["model"])["model"]
    prompt = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 4}), help_text="system prompt"
    )
    repo_url = forms.CharField(
        label="Repository URL",
        max_length=500,
        required=False,
        help_text="https:// URL, cloned into /work; tokens go in the secrets below",
    )
    branch = forms.CharField(max_length=255, required=False, initial="main")
    allow_out = RuleListField(
        label="Allowed egress",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono"}),
        help_text="hosts, *.wildcards, IPs or CIDRs, one per line; empty: any public host",
    )
    deny_out = RuleListField(
        label="Denied egress",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "class": "mono"}),
        help_text="blocked even when allowed above",
    )
    stop_on_vault_block = forms.BooleanField(
        label="Stop a session at its first blocked credential", required=False
    )

    # agent_errors() keys that belong to the secrets editor rather than to a field here.
    SECRET_KEYS = ("env_vars", "env_var_hosts")


class SecretForm(forms.Form):
    """One secret: its name, a write-only value and the hosts it may be sent to.

    A stored secret's value is never rendered: its row shows a mask as placeholder, and an
    empty value on submit keeps what is stored.
    """

    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"class": "mono"}))
    value = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    hosts = RuleListField(
        required=False,
        widget=forms.TextInput(attrs={"class": "mono", "placeholder": "api.github.com"}),
    )


class BaseSecretFormSet(forms.BaseFormSet):
    def __init__(self, *args, stored: frozenset[str] = frozenset(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stored = stored
        for form in self.forms:
            # The submitted name when the form comes back refused, so a stored secret's row
            # still says it is stored (its value is never sent back).
            if form["name"].value() in stored:
                form.fields["name"].widget.attrs["readonly"] = True
                form.fields["value"].widget.attrs["placeholder"] = "•••••••• (type to replace)"

    def clean(self) -> None:
        seen: set[str] = set()
        for form in self.forms:
            name = form.cleaned_data.get("name")
            if not name or self._should_delete_form(form):
                continue  # a blank row, or one whose name already has its error
            if name in seen:
                form.add_error("name", f"{name} appears twice")
            seen.add(name)
            # A value its field refused (a NUL byte) is missing here and has its error.
            if form.cleaned_data.get("value") == "" and name not in self.stored:
                form.add_error("value", "a new secret needs a value")

    def secrets(self) -> list[tuple[str, str, list[str]]]:
        """``(name, value or "" to keep the stored one, hosts)`` of every row kept."""
        return [
            (form.cleaned_data["name"], form.cleaned_data["value"], form.cleaned_data["hosts"])
            for form in self.forms
            if form.cleaned_data and not self._should_delete_form(form)
        ]


SecretFormSet = forms.formset_factory(
    SecretForm, formset=BaseSecretFormSet, extra=1, can_delete=True, max_num=50
)


class SessionFilterForm(forms.Form):
    agent = forms.CharField(required=False, label="Agent")
    status = forms.ChoiceField(
        required=False, choices=[("", "any status"), *Session.Status.choices]
    )


class PoolTargetsForm(forms.Form):
    """One target field per harness; the pool service decides what is acceptable."""

    def __init__(self, *args, harnesses: dict[str, dict], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for harness, counts in harnesses.items():
            self.fields[harness] = forms.IntegerField(
                label=harness,
                min_value=0,
                initial=counts["target"],
                widget=forms.NumberInput(attrs={"aria-label": f"Warm target for {harness}"}),
            )
