from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models

from agents.harnesses import harness_get
from agents.models import Agent


class SessionQuerySet(models.QuerySet):
    def visible_to(self, user: AbstractBaseUser) -> SessionQuerySet:
        """The sessions ``user`` may see and use: those of the agents it may
        (``AgentQuerySet.visible_to``), whoever started them."""
        return self if user.is_staff else self.filter(agent__created_by=user)


class Session(models.Model):
    """One sandbox running one harness for one agent.

    Status moves ``creating → ready → dead`` or ``creating → failed``; every
    change goes through ``transition`` (compare-and-set), so a stop that wins
    cannot be undone by a bring-up finishing late.
    """

    class Status(models.TextChoices):
        CREATING = "creating"
        READY = "ready"
        FAILED = "failed"
        DEAD = "dead"

    class Phase(models.TextChoices):
        CLAIMING_WARM = "claiming_warm"
        CREATING_SANDBOX = "creating_sandbox"
        STARTING_VAULT = "starting_vault"
        PUSHING_SECRETS = "pushing_secrets"
        STARTING_HARNESS = "starting_harness"
        CLONING_REPO = "cloning_repo"
        READY = "ready"

    LIVE = (Status.CREATING, Status.READY)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sessions")
    # Copied from the agent at create: a later PATCH of the agent must not change
    # what a running session says about itself (e.g. supports_tui).
    harness_id = models.CharField(max_length=50)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATING)
    phase = models.CharField(max_length=32, choices=Phase.choices, blank=True, default="")
    phase_detail = models.CharField(max_length=500, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")
    title = models.CharField(max_length=200, blank=True, default="")
    initial_prompt = models.TextField(blank=True, default="")
    env_vars = models.JSONField(default=dict, blank=True)  # NAME → encrypted value
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # When a restart sent it back to creating (bring-up timeouts count from here).
    restarted_at = models.DateTimeField(null=True, blank=True)
    # Set while an API harness's turn is in flight: one turn at a time (compare-and-set).
    turn_started_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sessions",
    )

    objects = SessionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["status", "last_seen_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}/{self.id}"

    @property
    def supports_tui(self) -> bool:
        harness = harness_get(self.harness_id)
        return bool(harness and harness.supports_tui)

    @property
    def is_live(self) -> bool:
        return self.status in self.LIVE

    def transition(self, *, expected: tuple[str, ...], **changes: Any) -> bool:
        """Write ``changes`` only if the row's status is still one of ``expected``.

        Returns whether this call won; on success the instance is updated too.
        """
        won = Session.objects.filter(pk=self.pk, status__in=expected).update(**changes) == 1
        if won:
            for field, value in changes.items():
                setattr(self, field, value)
        return won


class Sandbox(models.Model):
    """A sandbox a driver made; ``id`` is the sandbox id given to the driver.

    A warm-pool sandbox (``pool_state`` set) is made for a harness before any session asks:
    runner and vault up, no stub, no secret, no harness started. Its ``pool_state`` moves
    ``provisioning → warm → claimed`` (a compare-and-set binds it to one session), or ends in
    ``failed`` (provisioning failed), ``broken`` (a health check or its claim failed) or
    ``retired`` (recycled past ``LAP_POOL_MAX_AGE``). Rows are kept, so counts by state are
    totals since install (the pool metrics read them).
    """

    class State(models.TextChoices):
        CREATING = "creating"
        RUNNING = "running"
        DESTROYED = "destroyed"

    class PoolState(models.TextChoices):
        NONE = "", "not pooled"
        PROVISIONING = "provisioning"
        WARM = "warm"
        CLAIMED = "claimed"
        FAILED = "failed"
        BROKEN = "broken"
        RETIRED = "retired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Null for warm-pool sandboxes not yet claimed, and after the session is deleted.
    session = models.ForeignKey(
        Session, null=True, blank=True, on_delete=models.SET_NULL, related_name="sandboxes"
    )
    driver = models.CharField(max_length=50)
    ref = models.CharField(max_length=500, blank=True, default="")
    runner_url = models.CharField(max_length=500, blank=True, default="")
    runner_token = models.TextField(blank=True, default="")  # encrypted (vault.crypto)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CREATING)
    created_at = models.DateTimeField(auto_now_add=True)
    destroyed_at = models.DateTimeField(null=True, blank=True)
    labels = models.JSONField(default=dict, blank=True)
    harness_id = models.CharField(max_length=50, blank=True, default="")
    pool_state = models.CharField(
        max_length=16, choices=PoolState.choices, blank=True, default=PoolState.NONE
    )
    ready_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at", "id"]
        indexes = [models.Index(fields=["pool_state", "harness_id", "created_at"])]

    def __str__(self) -> str:
        return f"{self.driver}:{self.id}"


class SessionMessage(models.Model):
    """One turn of the durable conversation log; rows are appended, then completed once."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        PENDING = "pending"
        COMPLETE = "complete"
        FAILED = "failed"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="messages")
    seq = models.PositiveIntegerField()
    role = models.CharField(max_length=16, choices=Role.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    parts = models.JSONField(default=list)
    # The harness's message info (tokens, cost, model, ``error`` {name, data}); for a failed
    # user turn, why it failed.
    info = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["session", "seq"], name="session_message_seq_unique")
        ]

    def __str__(self) -> str:
        return f"{self.session_id}#{self.seq}"
