"""Vault state: the platform root CA, each sandbox's sealing key and stubs, what its sidecar saw.

Secret values never live here: agent and session secrets stay in their own rows, encrypted
with ``vault.crypto``, and are read only when a bundle is sealed. What is kept per sandbox is
the sealing key (encrypted), the bundle version counter, the stubs minted for it (stable for
its life), the interception records pulled from its sidecar and the security events they raised.
"""

from __future__ import annotations

from django.db import models

from sandboxes.models import Sandbox, Session


class PlatformCA(models.Model):
    """The platform root CA, generated once; its key is encrypted with ``LAP_ENCRYPTION_KEYS``."""

    name = models.CharField(max_length=32, unique=True, default="root")
    cert_pem = models.TextField()
    key = models.TextField()  # encrypted PKCS#8 PEM (vault.crypto)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "platform CA"

    def __str__(self) -> str:
        return f"platform CA {self.name}"


class SandboxVault(models.Model):
    """One sandbox's vault: sealing key, bundle version and where its sidecar listens."""

    sandbox = models.OneToOneField(
        Sandbox, primary_key=True, on_delete=models.CASCADE, related_name="vault"
    )
    sealing_key = models.TextField()  # encrypted Fernet key (vault.crypto)
    # Incremented for every bundle built; the sidecar refuses versions it has seen.
    version = models.PositiveBigIntegerField(default=0)
    pushed_version = models.PositiveBigIntegerField(null=True, blank=True)
    pushed_at = models.DateTimeField(null=True, blank=True)
    control_url = models.CharField(max_length=500, blank=True, default="")
    ca_cert_pem = models.TextField(blank=True, default="")  # the intermediate (public)
    # The last interception ``seq`` stored, for ``/interceptions?after=``.
    records_seq = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"vault of {self.sandbox_id}"


class VaultKey(models.Model):
    """A credential a sandbox's env holds as a stub: its name, stub and allowed hosts."""

    class Source(models.TextChoices):
        AGENT = "agent"
        SESSION = "session"
        PLATFORM = "platform"

    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="vault_keys")
    name = models.CharField(max_length=100)
    stub = models.CharField(max_length=200, unique=True)
    source = models.CharField(max_length=16, choices=Source.choices)
    allowed_hosts = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["sandbox", "name"]
        constraints = [
            models.UniqueConstraint(fields=["sandbox", "name"], name="vault_key_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.sandbox_id}:{self.name}"


class InterceptionRecord(models.Model):
    """One request the sidecar handled; names and hosts only, never a value or a stub.

    Ordered by ``id`` (insertion order, which follows the sidecar's ``seq``), so limit/offset
    pages are stable while new records arrive at the end.
    """

    # What the API and the admin show of a record, in this order.
    REPORTED_FIELDS = (
        "seq",
        "time",
        "method",
        "host",
        "path",
        "decision",
        "reason",
        "credentials",
        "status",
        "bytes_out",
        "bytes_in",
        "duration_ms",
    )

    class Decision(models.TextChoices):
        ALLOWED = "allowed"
        BLOCKED = "blocked"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="interceptions")
    sandbox = models.ForeignKey(Sandbox, on_delete=models.CASCADE, related_name="interceptions")
    seq = models.PositiveBigIntegerField()
    time = models.DateTimeField()
    method = models.CharField(max_length=16, blank=True, default="")
    host = models.CharField(max_length=255, blank=True, default="")
    path = models.CharField(max_length=2000, blank=True, default="")
    decision = models.CharField(max_length=16, choices=Decision.choices)
    reason = models.CharField(max_length=64, blank=True, default="")
    credentials = models.JSONField(default=list, blank=True)
    status = models.PositiveIntegerField(null=True, blank=True)
    bytes_out = models.PositiveBigIntegerField(default=0)
    bytes_in = models.PositiveBigIntegerField(default=0)
    duration_ms = models.FloatField(default=0)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["session", "id"])]
        constraints = [
            models.UniqueConstraint(fields=["sandbox", "seq"], name="interception_seq_unique")
        ]

    def __str__(self) -> str:
        return f"{self.sandbox_id}#{self.seq} {self.decision} {self.host}"


class SecurityEvent(models.Model):
    """A tripwire on a session: a credential was sent to a host it is not allowed for."""

    class Kind(models.TextChoices):
        VAULT_BLOCKED = "vault_blocked"

    session = models.ForeignKey(Session, on_delete=models.CASCADE, related_name="security_events")
    record = models.OneToOneField(
        InterceptionRecord, on_delete=models.CASCADE, related_name="security_event"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    credentials = models.JSONField(default=list, blank=True)
    host = models.CharField(max_length=255, blank=True, default="")
    detail = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["session", "id"])]

    def __str__(self) -> str:
        return f"{self.session_id}: {self.kind} {self.host}"
