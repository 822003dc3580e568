"""Issuing API tokens and finding whose a presented token is."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from accounts.models import ApiToken

TOKEN_PREFIX = "lap_"  # noqa: S105 - marks a LAP token (e.g. for secret scanners); not a secret
PREFIX_SHOWN = 10  # characters of a token the admin shows: "lap_" and six random ones
LAST_USED_RESOLUTION = timedelta(minutes=5)  # a busy client must not write on every request


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_issue(user: AbstractBaseUser) -> str:
    """A new token for ``user``, replacing any earlier one; the only time it is readable."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.update_or_create(
        user=user,
        defaults={
            "digest": token_digest(token),
            "prefix": token[:PREFIX_SHOWN],
            "created_at": timezone.now(),
            "last_used_at": None,
        },
    )
    return token


def api_token_user(token: str) -> AbstractBaseUser | None:
    """The active user ``token`` belongs to, or None; records when it was last used."""
    found = ApiToken.objects.select_related("user").filter(digest=token_digest(token)).first()
    if found is None or not found.user.is_active:
        return None
    now = timezone.now()
    if found.last_used_at is None or now - found.last_used_at > LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=now)
    return found.user
