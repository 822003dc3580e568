"""Agents: the list, and the create/edit form with its secrets editor."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from agents import services
from agents.models import Agent
from agents.validation import agent_errors
from lapsite.errors import Conflict, LapError
from sandboxes.services import session_stats_by_agent
from webui.forms import AgentForm, SecretFormSet
from webui.views import get_or_404, login_required, page_number, pager

PAGE_SIZE = 50


@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    search = request.GET.get("q", "").strip()
    page = page_number(request)
    agents, total = services.agent_list(
        viewer=request.user, search=search, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    stats = session_stats_by_agent(agent.pk for agent in agents)
    rows = [(agent, *stats.get(agent.pk, (0, ""))) for agent in agents]
    context = {
        "rows": rows,
        "total": total,
        "search": search,
        "pager": pager(request, page, has_older=page * PAGE_SIZE < total),
    }
    return render(request, "webui/agent_list.html", context)


def _initial(agent: Agent) -> tuple[dict, list[dict]]:
    fields = {name: getattr(agent, name) for name in AgentForm.base_fields}
    secrets = [
        {"name": name, "hosts": agent.env_var_hosts.get(name, [])}
        for name in services.env_var_names(agent)
    ]
    return fields, secrets


def _changes(form: AgentForm, secrets: SecretFormSet) -> dict:
    """The services' keyword arguments; an empty value of a stored secret keeps it (the mask)."""
    changes = dict(form.cleaned_data)
    changes["branch"] = changes["branch"] or "main"
    changes["env_vars"] = {
        name: value or services.SECRET_MASK for name, value, _ in secrets.secrets()
    }
    changes["env_var_hosts"] = {name: hosts for name, _, hosts in secrets.secrets() if hosts}
    return changes


def _problems(agent: Agent | None, changes: dict) -> dict[str, list[str]]:
    """What ``agents.validation`` says about the agent as it would be saved."""
    env_plain = (
        services.env_vars_merge(agent, changes["env_vars"]) if agent else changes["env_vars"]
    )
    return agent_errors(
        name=changes["name"],
        harness_id=changes["harness_id"],
        prompt=changes["prompt"],
        repo_url=changes["repo_url"],
        branch=changes["branch"],
        env_vars=env_plain,
        env_var_hosts=changes["env_var_hosts"],
        allow_out=changes["allow_out"],
        deny_out=changes["deny_out"],
    )


def _save(request: HttpRequest, agent: Agent | None, changes: dict) -> Agent:
    if agent is None:
        return services.agent_create(user=request.user, **changes)
    return services.agent_update(agent, **changes)


def _in_form_words(problem: str) -> str:
    """A validation message naming fields by their names on the form ("Allowed egress",
    "Secrets") rather than as the API does (``allow_out``, ``env_vars``)."""
    label = AgentForm.base_fields["allow_out"].label
    return problem.replace("allow_out", f"“{label}”").replace("env_vars", "“Secrets”")


@login_required
@require_http_methods(["GET", "POST"])
def agent_form(request: HttpRequest, agent_id: str | None = None) -> HttpResponse:
    agent = get_or_404(services.agent_get, agent_id, request) if agent_id else None
    stored = frozenset(services.env_var_names(agent)) if agent else frozenset()
    secret_errors: list[str] = []
    if request.method == "POST":
        form = AgentForm(request.POST)
        secrets = SecretFormSet(request.POST, prefix="secrets", stored=stored)
        if form.is_valid() and secrets.is_valid():
            changes = _changes(form, secrets)
            for field, problems in _problems(agent, changes).items():
                problems = [_in_form_words(problem) for problem in problems]
                if field in AgentForm.SECRET_KEYS:
                    secret_errors.extend(problems)
                else:
                    form.add_error(field, problems)
            if form.is_valid() and not secret_errors:
                try:
                    saved = _save(request, agent, changes)
                except Conflict as error:
                    form.add_error("name", error.message)
                except LapError as error:
                    form.add_error(None, error.message)
                else:
                    messages.success(request, f"Agent {saved.name} saved.")
                    return redirect("webui:agent-list")
    else:
        fields, rows = _initial(agent) if agent else ({}, [])
        form = AgentForm(initial=fields)
        secrets = SecretFormSet(initial=rows, prefix="secrets", stored=stored)
    # A refused form comes back without the values typed into it (never rendered): say so.
    retype = any(
        value
        for key, value in request.POST.items()
        if key.startswith("secrets-") and key.endswith("-value")
    )
    context = {
        "agent": agent,
        "form": form,
        "secrets": secrets,
        "secret_errors": secret_errors,
        "retype": retype,
    }
    return render(request, "webui/agent_form.html", context)


@login_required
@require_POST
def agent_delete(request: HttpRequest, agent_id: str) -> HttpResponse:
    """Delete the agent as ``DELETE /agents/{id}`` does: its live sessions are stopped first."""
    agent = get_or_404(services.agent_get, agent_id, request)
    services.agent_delete(agent)
    messages.success(request, f"Agent {agent.name} deleted; its live sessions were stopped.")
    return redirect("webui:agent-list")
