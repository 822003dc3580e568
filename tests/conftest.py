"""Fixtures for the whole suite; see STYLE.md 3.11."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings
from django.test import AsyncClient, Client
from rest_framework.test import APIClient

from accounts.services import api_token_issue
from agents.services import agent_create
from sandboxes import registry
from sandboxes.services import session_bring_up, session_create
from tests.fakes import FakeDriver
from tests.live import LivePlatform
from tests.schema_conformance import check_response
from vault.sidecar_client import use_sidecar

SECRET = "ghp_s3cr3t-value-that-must-never-leak-9f2c"


@pytest.fixture(scope="session", autouse=True)
def _remove_lap_home():
    yield
    home = Path(settings.LAP_HOME)
    if home.name.startswith("lap-test-"):  # only the mkdtemp of settings_test
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _responses_match_schema():
    """Every API response a test client receives is checked against the OpenAPI schema
    (tests/schema_conformance.py); a mismatch fails the test at the request that got it.
    ``APIClient`` is a Django ``Client``, so wrapping Django's two clients covers all three."""
    sync_request, async_request = Client.request, AsyncClient.request

    def checked(self, **request):
        response = sync_request(self, **request)
        check_response(response.wsgi_request, response)
        return response

    async def checked_async(self, **request):
        response = await async_request(self, **request)
        check_response(response.asgi_request, response)
        return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Client, "request", checked)
        patch.setattr(AsyncClient, "request", checked_async)
        yield


@pytest.fixture(autouse=True)
def fake_driver(request):
    """Every test runs against ``FakeDriver`` unless it is marked to use a real driver."""
    if request.node.get_closest_marker("bwrap") or request.node.get_closest_marker("e2e"):
        yield None
        return
    driver = FakeDriver()
    with (
        registry.use_driver(driver, runner_client=driver.runner_client),
        use_sidecar(driver.sidecar_client),
    ):
        yield driver


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("charlie", password="charlie-password")


@pytest.fixture
def anon_client():
    return APIClient()


@pytest.fixture
def api_client():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {settings.LAP_MASTER_KEY}")
    return client


@pytest.fixture
def token_client(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_issue(user)}")
    return client


@pytest.fixture
def agent(user):
    return agent_create(
        user=user,
        name="test-agent",
        harness_id="shell",
        env_vars={"GITHUB_TOKEN": SECRET},
        env_var_hosts={"GITHUB_TOKEN": ["api.github.com"]},
        allow_out=["*.github.com", "api.github.com"],
    )


@pytest.fixture
def session(agent, user):
    """A session in ``creating`` whose bring-up has not run."""
    return session_create(agent=agent, user=user, title="t")


@pytest.fixture
def ready_session(session):
    session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == "ready", session.failure_reason
    return session


@pytest.fixture(scope="session")
def live_platform():
    """The real platform (``lap_serve``) on loopback with real bwrap sandboxes (tests/live.py)."""
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap (bwrap) is not installed: apt-get install bubblewrap")
    platform = LivePlatform().start()
    yield platform
    platform.stop()
