"""The 403, CSRF-failure and 500 pages are the site's pages (its layout, a way on), not
Django's bare defaults; the 500 page renders without a request, context processors or the
database, as Django renders it."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse

from lapsite.api import handler500
from tests.ui.test_views import agent_post

SITE_LAYOUT = 'class="topbar"'


@pytest.mark.django_db
def test_a_403_is_the_sites_page(user):
    client = Client()
    client.force_login(user)
    response = client.post(reverse("webui:pool"), {"shell": "3"})
    assert response.status_code == 403
    html = response.content.decode()
    assert SITE_LAYOUT in html and 'aria-label="Main"' in html  # logged in: the menu too
    assert "<h1>Not allowed</h1>" in html and "only staff set pool targets" in html


@pytest.mark.django_db
def test_a_csrf_failure_says_to_reload_the_page(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(reverse("webui:agent-create"), agent_post())
    assert response.status_code == 403
    html = response.content.decode()
    assert SITE_LAYOUT in html and 'aria-label="Main"' in html
    assert "Nothing was saved" in html and "reload its page and try again." in html
    assert "CSRF verification failed" not in html


def test_a_500_is_the_sites_page_without_request_context_or_database():
    """No ``django_db`` mark: a query while rendering would fail the test."""
    response = handler500(RequestFactory().get("/agents/"))
    assert response.status_code == 500
    html = response.content.decode()
    assert SITE_LAYOUT in html and "<h1>Server error</h1>" in html
    assert 'aria-label="Main"' not in html  # nobody is known to be logged in


@pytest.mark.django_db
def test_a_failing_page_answers_with_the_500_page(user, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("webui.views.agents.services.agent_list", broken)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    response = client.get(reverse("webui:agent-list"))
    assert response.status_code == 500
    assert "<h1>Server error</h1>" in response.content.decode()
