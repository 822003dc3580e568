"""Per-user API tokens, kept as digests.

A token is shown once, when it is made (``manage.py lap_token``); the database holds only its
SHA-256 digest, so a copy of the database, a backup or the admin never reveals a working
token. A plain digest is enough: a token is 256 random bits, not a password to brute-force.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token"
    )
    digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(
        max_length=12, editable=False, help_text="the token's first characters, to tell it apart"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
