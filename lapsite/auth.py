"""API authentication: ``Authorization: Bearer <key>``.

The key is either the platform master key (compared in constant time; the
request then acts as the built-in ``master`` superuser) or a per-user API token
(DRF's authtoken, created in the admin or with ``manage.py lap_token``).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from rest_framework import authentication, exceptions

MASTER_USERNAME = "master"


def master_user() -> AbstractBaseUser:
    """The account that master-key requests act as (created on first use)."""
    user, _ = get_user_model().objects.get_or_create(
        username=MASTER_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    return user


def is_master_key(candidate: str) -> bool:
    return hmac.compare_digest(candidate.encode(), settings.LAP_MASTER_KEY.encode())


def bearer_credential(request) -> str | None:
    """The credential of an ``Authorization: Bearer`` header, or None when absent."""
    parts = authentication.get_authorization_header(request).split()
    if not parts or parts[0].lower() != b"bearer":
        return None
    if len(parts) != 2:
        raise exceptions.AuthenticationFailed("malformed Authorization header")
    try:
        return parts[1].decode()
    except UnicodeDecodeError as error:
        raise exceptions.AuthenticationFailed("malformed Authorization header") from error


class MasterKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        credential = bearer_credential(request)
        if credential is None or not is_master_key(credential):
            return None
        return master_user(), None

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="lap"'


class BearerTokenAuthentication(authentication.TokenAuthentication):
    """DRF token auth with the ``Bearer`` keyword LAP clients send."""

    keyword = "Bearer"
