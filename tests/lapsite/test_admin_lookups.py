"""The admin refuses change-list filters through a secret field, which would let a staff user
test the stored (encrypted or hashed) bytes piece by piece."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

SECRET_LOOKUPS = [
    "/admin/agents/agent/?env_vars__icontains=a",
    "/admin/sandboxes/session/?env_vars__icontains=a",
    "/admin/sandboxes/session/?agent__env_vars__icontains=a",
    "/admin/sandboxes/sandbox/?runner_token__startswith=g",
    "/admin/sandboxes/sandbox/?session__agent__env_vars__icontains=a",
    "/admin/vault/sandboxvault/?sealing_key__startswith=g",
    "/admin/vault/vaultkey/?sandbox__runner_token__startswith=g",
    "/admin/accounts/apitoken/?digest__startswith=0",
]


@pytest.mark.parametrize("url", SECRET_LOOKUPS)
def test_a_filter_through_a_secret_field_is_refused(admin_client, ready_session, url):
    assert admin_client.get(url).status_code == 400


@pytest.mark.parametrize(
    "url",
    [
        "/admin/sandboxes/session/?status__exact=ready",
        "/admin/agents/agent/?harness_id__exact=shell",
    ],
)
def test_filters_on_other_fields_still_work(admin_client, ready_session, url):
    assert admin_client.get(url).status_code == 200
