"""Warm-pool targets: how many warm sandboxes to keep per harness.

The warm sandboxes themselves are ``sandboxes.models.Sandbox`` rows with a ``pool_state``;
the global cap over all harnesses is ``settings.LAP_POOL_MAX``.
"""

from __future__ import annotations

from django.db import models


class PoolTarget(models.Model):
    """Keep ``target`` warm (or provisioning) sandboxes of ``harness_id``."""

    harness_id = models.CharField(max_length=50, unique=True)
    target = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["harness_id"]

    def __str__(self) -> str:
        return f"{self.harness_id}: {self.target}"
