from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models

from agents.harnesses import harness_get


class AgentQuerySet(models.QuerySet):
    def visible_to(self, user: AbstractBaseUser) -> AgentQuerySet:
        """The agents ``user`` may see and use: staff (the master key's user included) see
        every agent, anyone else the agents they created."""
        return self if user.is_staff else self.filter(created_by=user)


class Agent(models.Model):
    """An agent configuration: which harness runs, with what repo, prompt and secrets.

    ``env_vars`` maps each secret's name to its value encrypted with
    ``vault.crypto``; the plaintext never leaves the platform (sandboxes get stubs).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=100, unique=True)
    model = models.CharField(max_length=200, blank=True, default="")
    harness_id = models.CharField(max_length=50, db_index=True)
    prompt = models.TextField(blank=True, default="")
    repo_url = models.CharField(max_length=500, blank=True, default="")
    branch = models.CharField(max_length=255, default="main")
    env_vars = models.JSONField(default=dict, blank=True)
    env_var_hosts = models.JSONField(default=dict, blank=True)
    allow_out = models.JSONField(default=list, blank=True)
    deny_out = models.JSONField(default=list, blank=True)
    # Stop a session at its first vault tripwire (a credential sent to a host it is not for).
    stop_on_vault_block = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="agents",
    )

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "id"]

    def __str__(self) -> str:
        return self.name

    @property
    def supports_tui(self) -> bool:
        harness = harness_get(self.harness_id)
        return bool(harness and harness.supports_tui)
