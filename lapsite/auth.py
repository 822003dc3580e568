"""API authentication: ``Authorization: Bearer <key>``.

The key is either the platform master key (compared in constant time; the
request then acts as the built-in ``master`` superuser) or a per-user API token
(``manage.py lap_token``; the database holds only its digest, ``accounts.models``).
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from rest_framework import authentication, exceptions

from accounts.services import api_token_user

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


class _BearerAuthentication(authentication.BaseAuthentication):
    def authenticate_header(self, request) -> str:
        """What a 401 asks for (``WWW-Authenticate``)."""
        return 'Bearer realm="lap"'


class MasterKeyAuthentication(_BearerAuthentication):
    def authenticate(self, request):
        credential = bearer_credential(request)
        if credential is None or not is_master_key(credential):
            return None
        return master_user(), None


class BearerTokenAuthentication(_BearerAuthentication):
    """A per-user API token in ``Authorization: Bearer``; runs after the master key's check,
    so a Bearer credential that is neither is refused here (401)."""

    def authenticate(self, request):
        credential = bearer_credential(request)
        if credential is None:
            return None
        user = api_token_user(credential)
        if user is None:
            raise exceptions.AuthenticationFailed("invalid API token")
        return user, None
