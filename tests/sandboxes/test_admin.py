from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from sandboxes.models import Session

pytestmark = pytest.mark.django_db


def test_session_admin_stop_needs_more_than_view_permission(
    django_user_model, ready_session, fake_driver
):
    # A staff user who may only look at sessions must not stop them.
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(content_type__app_label="sandboxes", codename="view_session")
    )
    client = Client()
    client.force_login(viewer)
    listing = client.get("/admin/sandboxes/session/")
    assert listing.status_code == 200
    assert "stop_sessions" not in listing.content.decode()
    client.post(
        "/admin/sandboxes/session/",
        {"action": "stop_sessions", "_selected_action": [str(ready_session.pk)]},
    )
    assert Session.objects.get(pk=ready_session.pk).status == "ready"
    assert fake_driver.sandboxes


def test_session_admin_stop_is_allowed_with_change_permission(
    django_user_model, ready_session, fake_driver
):
    operator = django_user_model.objects.create_user("operator", password="x", is_staff=True)
    operator.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="sandboxes", codename__in=["view_session", "change_session"]
        )
    )
    client = Client()
    client.force_login(operator)
    client.post(
        "/admin/sandboxes/session/",
        {"action": "stop_sessions", "_selected_action": [str(ready_session.pk)]},
    )
    assert Session.objects.get(pk=ready_session.pk).status == "dead"
    assert not fake_driver.sandboxes
