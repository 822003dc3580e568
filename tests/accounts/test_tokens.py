"""API tokens: made once by ``lap_token``, kept as digests, refused once rotated or when
their user is inactive; tokens DRF's authtoken made before keep working."""

from __future__ import annotations

import hashlib
import importlib
import io
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import api_token_issue

pytestmark = pytest.mark.django_db

AGENTS = "/api/v1/managed_agents/agents"


def lap_token(*args: str) -> str:
    out = io.StringIO()
    call_command("lap_token", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def status_with(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get(AGENTS).status_code


def stored_values() -> list[str]:
    return [str(value) for row in ApiToken.objects.values_list() for value in row]


def test_lap_token_makes_a_user_and_prints_a_working_token_once(django_user_model):
    token = lap_token("bob")
    assert token.startswith("lap_") and len(token) > 40
    assert not django_user_model.objects.get(username="bob").has_usable_password()
    assert status_with(token) == 200
    assert token not in stored_values()  # only its digest is kept
    assert ApiToken.objects.get().digest == hashlib.sha256(token.encode()).hexdigest()
    with pytest.raises(CommandError, match="already has a token"):
        lap_token("bob")


def test_rotating_replaces_the_token(user):
    first = api_token_issue(user)
    second = lap_token(user.username, "--rotate")
    assert second != first
    assert (status_with(first), status_with(second)) == (401, 200)
    assert ApiToken.objects.filter(user=user).count() == 1


def test_an_inactive_users_token_is_refused(user):
    token = api_token_issue(user)
    user.is_active = False
    user.save()
    assert status_with(token) == 401


def test_use_is_recorded(user):
    token = api_token_issue(user)
    assert ApiToken.objects.get().last_used_at is None
    assert status_with(token) == 200
    assert ApiToken.objects.get().last_used_at is not None


def test_the_admin_shows_a_prefix_never_the_token(admin_client, user):
    token = api_token_issue(user)
    page = admin_client.get("/admin/accounts/apitoken/").content.decode()
    assert token[:10] in page and user.username in page
    assert token not in page and ApiToken.objects.get().digest not in page
    assert admin_client.get("/admin/accounts/apitoken/add/").status_code == 403


def test_tokens_drf_made_keep_working_and_their_plaintext_is_deleted(user):
    legacy = "0123456789abcdef0123456789abcdef01234567"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY, "
            "created timestamp NOT NULL, user_id integer NOT NULL)"
        )
        cursor.execute(
            "INSERT INTO authtoken_token VALUES (%s, CURRENT_TIMESTAMP, %s)", [legacy, user.pk]
        )
    migration = importlib.import_module("accounts.migrations.0002_digests_of_drf_tokens")
    migration.digests_of_drf_tokens(apps, SimpleNamespace(connection=connection))
    assert status_with(legacy) == 200
    assert legacy not in stored_values()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM authtoken_token")
        assert cursor.fetchone() == (0,)
