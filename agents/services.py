"""Agent operations: the only code that creates, changes or deletes agents."""

from __future__ import annotations

import re
import secrets
import unicodedata
import uuid
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.db.models.functions import Lower

from agents.models import Agent
from agents.validation import (
    SECRET_MASK,
    agent_errors,
    first_error,
    host_is_covered,
    label_errors,
    rule_is_valid,
)
from lapsite.errors import Conflict, LapError, NotFound
from sandboxes.models import Session
from sandboxes.services import session_stop_all_for_agent
from vault import crypto
from vault.services import vault_push_for_agent

UPDATABLE = (
    "name",
    "model",
    "harness_id",
    "prompt",
    "repo_url",
    "branch",
    "env_vars",
    "env_var_hosts",
    "allow_out",
    "deny_out",
    "stop_on_vault_block",
)
# Changes that alter what running sandboxes' vaults must hold: pushed to them at once.
VAULT_FIELDS = frozenset({"env_vars", "env_var_hosts", "allow_out", "deny_out"})
_SLUG_JUNK = re.compile(r"[^a-z0-9.]+")
# GET /agents?sort=…: the reference API's names for the list's orders.
SORTS = {
    "created_at": "created_at",
    "name": "name",
    "harness_id": "harness_id",
    "sessions": "session_count",
}


class AgentInvalid(LapError):
    code = "invalid"
    default_message = "invalid agent"


def agent_get(agent_id: str, *, viewer: AbstractBaseUser) -> Agent:
    """The agent whose id (a UUID) or name is ``agent_id``, if ``viewer`` may see it
    (``AgentQuerySet.visible_to``); ``NotFound`` otherwise, so nobody learns which agents
    other users have."""
    try:
        lookup = Q(pk=uuid.UUID(agent_id))
    except ValueError:
        lookup = Q(name=unicodedata.normalize("NFC", agent_id))  # as names are stored
    # No name holds a control character (validation refuses them), and Postgres refuses a NUL
    # in a query outright: do not ask.
    visible = Agent.objects.visible_to(viewer)
    agent = None if label_errors("name", agent_id) else visible.filter(lookup).first()
    if agent is None:
        raise NotFound(f"agent '{agent_id}' not found")
    return agent


def agent_list(
    *,
    viewer: AbstractBaseUser,
    search: str = "",
    limit: int = 50,
    offset: int = 0,
    sort: str = "created_at",
    order: str = "desc",
) -> tuple[list[Agent], int]:
    """One page of the agents ``viewer`` may see and the total matching ``search``.

    Each agent carries ``session_count`` and ``has_active_session`` (creating or ready), as
    the reference API's list does. ``sort`` is one of ``SORTS`` (``sessions``: by session
    count), ``order`` ``asc`` or ``desc``; ties go newest first.
    """
    live = Session.objects.filter(
        agent=OuterRef("pk"), status__in=(Session.Status.CREATING, Session.Status.READY)
    )
    agents = Agent.objects.visible_to(viewer).annotate(
        session_count=Count("sessions"), has_active_session=Exists(live)
    )
    if search:
        # Lower() on both sides, not icontains: SQLite's LIKE ignores case for ASCII only.
        folded = search.lower()
        agents = agents.annotate(name_folded=Lower("name")).filter(
            Q(name_folded__contains=folded)
            | Q(harness_id__icontains=search)
            | Q(id__icontains=search)
        )
    key = SORTS[sort]
    agents = agents.order_by(f"-{key}" if order == "desc" else key, "-created_at", "id")
    return list(agents[offset : offset + limit]), agents.count()


def env_var_names(agent: Agent) -> list[str]:
    return sorted(agent.env_vars)


def env_vars_masked(stored: Mapping[str, str]) -> dict[str, str]:
    return dict.fromkeys(sorted(stored), SECRET_MASK)


def env_vars_merge(agent: Agent, incoming: Mapping[str, str] | None) -> dict[str, str]:
    """The plaintext env vars after an update that sends ``incoming`` (None: unchanged).

    ``incoming`` replaces the whole map, except that a value equal to the mask
    keeps that key's stored secret, so a client that sends back what it read
    never overwrites a secret with its mask.
    """
    current = crypto.decrypt_map(agent.env_vars)
    if incoming is None:
        return current
    return {
        name: current[name] if value == SECRET_MASK and name in current else value
        for name, value in incoming.items()
    }


def _check(agent: Agent, env_plain: Mapping[str, str]) -> None:
    errors = agent_errors(
        name=agent.name,
        harness_id=agent.harness_id,
        prompt=agent.prompt,
        repo_url=agent.repo_url,
        branch=agent.branch,
        env_vars=env_plain,
        env_var_hosts=agent.env_var_hosts,
        allow_out=agent.allow_out,
        deny_out=agent.deny_out,
    )
    if errors:
        raise AgentInvalid(first_error(errors))


def _save(agent: Agent) -> None:
    # One spelling per name: "café" composed or decomposed looks the same in every list.
    agent.name = unicodedata.normalize("NFC", agent.name)
    if Agent.objects.filter(name=agent.name).exclude(pk=agent.pk).exists():
        raise Conflict(f"an agent named '{agent.name}' already exists", code="name_taken")
    try:
        with transaction.atomic():
            agent.save()
    except IntegrityError as error:  # lost a race with a concurrent create of the same name
        raise Conflict(
            f"an agent named '{agent.name}' already exists", code="name_taken"
        ) from error


def default_name(model: str) -> str:
    """A name for an agent created without one (the reference API makes ``name`` optional):
    the model's last path segment as a slug, e.g. ``claude-sonnet-4-6-3fa9c2``."""
    slug = _SLUG_JUNK.sub("-", model.rsplit("/", 1)[-1].lower()).strip("-.")[:40] or "agent"
    return f"{slug}-{secrets.token_hex(3)}"


def agent_create(
    *,
    user: AbstractBaseUser | None,
    name: str,
    harness_id: str,
    model: str = "",
    prompt: str = "",
    repo_url: str = "",
    branch: str = "main",
    env_vars: Mapping[str, str] | None = None,
    env_var_hosts: Mapping[str, list[str]] | None = None,
    allow_out: list[str] | None = None,
    deny_out: list[str] | None = None,
    stop_on_vault_block: bool = False,
) -> Agent:
    """Create an agent; secrets are encrypted before they are stored.

    Raises ``AgentInvalid`` (400) for bad input and ``Conflict`` when the name is taken.
    """
    env_plain = dict(env_vars or {})
    agent = Agent(
        name=name,
        harness_id=harness_id,
        model=model,
        prompt=prompt,
        repo_url=repo_url,
        branch=branch or "main",
        env_var_hosts=dict(env_var_hosts or {}),
        allow_out=list(allow_out or []),
        deny_out=list(deny_out or []),
        stop_on_vault_block=stop_on_vault_block,
        created_by=user if user is not None and user.pk else None,
    )
    _check(agent, env_plain)
    agent.env_vars = crypto.encrypt_map(env_plain)
    _save(agent)
    return agent


def agent_update(agent: Agent, **changes: Any) -> Agent:
    """Apply a partial update and validate the result as a whole (``env_vars_merge``).

    New ``env_var_hosts`` without ``allow_out`` widen it (``allow_out_after``); given both,
    they must agree (400).
    A change of secrets, their hosts or the egress rules is pushed to the vault of every
    running sandbox of the agent (after commit), so rotation needs no restart.
    Raises ``AgentInvalid`` (400) for bad input and ``Conflict`` when the name is taken.
    """
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise AgentInvalid(f"cannot update {', '.join(sorted(unknown))}")
    touched = set(changes)
    env_plain = env_vars_merge(agent, changes.pop("env_vars", None))
    changes["allow_out"] = allow_out_after(agent, changes)
    for field, value in changes.items():
        setattr(agent, field, value)
    if not agent.branch:
        agent.branch = "main"
    _check(agent, env_plain)
    agent.env_vars = crypto.encrypt_map(env_plain)
    _save(agent)
    if VAULT_FIELDS.intersection(touched):
        vault_push_for_agent(agent)
    return agent


def allow_out_after(agent: Agent, changes: Mapping[str, Any]) -> list[str]:
    """The agent's ``allow_out`` once ``changes`` (an update) apply: as given, if given;
    otherwise widened to cover each host that new ``env_var_hosts`` bind and it does not, as
    the reference platform's PATCH does. An empty ``allow_out`` allows every host already; a
    malformed host is left for validation to report."""
    if "allow_out" in changes:
        return list(changes["allow_out"])
    if not agent.allow_out or "env_var_hosts" not in changes:
        return agent.allow_out
    widened = list(agent.allow_out)
    for hosts in changes["env_var_hosts"].values():
        for host in hosts:
            if rule_is_valid(host) and not host_is_covered(host, widened):
                widened.append(host)
    return widened


def agent_delete(agent: Agent) -> None:
    """Stop the agent's live sessions (destroying their sandboxes), then delete it."""
    session_stop_all_for_agent(agent)
    agent.delete()
