from __future__ import annotations

import pytest

from agents.models import Agent
from agents.validation import env_var_errors
from sandboxes import services
from sandboxes.drivers import local_jail
from sandboxes.drivers.kubernetes import KubernetesDriver
from sandboxes.models import Sandbox, Session
from tests.conftest import SECRET

pytestmark = pytest.mark.django_db


def test_create_returns_creating_and_enqueues_bring_up_after_commit(
    agent, user, django_capture_on_commit_callbacks, fake_driver
):
    with django_capture_on_commit_callbacks() as callbacks:
        session = services.session_create(agent=agent, user=user, title="t")
        assert session.status == Session.Status.CREATING
        assert not fake_driver.sandboxes  # nothing happens before commit
    assert len(callbacks) == 1


def test_bring_up_runs_via_q_sync_and_makes_session_ready(
    agent, user, django_capture_on_commit_callbacks, fake_driver
):
    with django_capture_on_commit_callbacks(execute=True):
        session = services.session_create(agent=agent, user=user, env_vars={"EXTRA": "x1"})
    session.refresh_from_db()
    assert (session.status, session.phase) == (Session.Status.READY, Session.Phase.READY)
    assert session.last_seen_at is not None
    sandbox = Sandbox.objects.get(session=session)
    assert sandbox.state == Sandbox.State.RUNNING
    assert sandbox.runner_url == f"fake://{sandbox.id}"
    assert (
        sandbox.runner_token
        and sandbox.runner_token != fake_driver.sandboxes[str(sandbox.id)].spec.runner_token
    )  # stored encrypted
    started = fake_driver.sandboxes[str(sandbox.id)].started
    assert started["argv"] == ["bash", "-l"]
    assert started["cwd"] == "/work"


def test_harness_env_holds_stubs_never_secret_values(ready_session, fake_driver):
    env = fake_driver.sandboxes[str(ready_session.sandboxes.get().id)].started["env"]
    assert env["GITHUB_TOKEN"].startswith("lap_stub_GITHUB_TOKEN_")
    assert len(env["GITHUB_TOKEN"].rsplit("_", 1)[1]) == 32  # 128 bits of randomness
    assert SECRET not in repr(env)
    assert env["LAP_SESSION_ID"] == str(ready_session.id)


def test_spec_carries_labels_and_egress(ready_session, agent, fake_driver):
    sandbox = ready_session.sandboxes.get()
    spec = fake_driver.sandboxes[str(sandbox.id)].spec
    assert spec.labels == {
        "lap.sandbox/id": str(sandbox.id),
        "lap.session/id": str(ready_session.id),
        "lap.agent/id": str(agent.id),
    }
    assert spec.egress.allow_out == tuple(agent.allow_out)
    assert sandbox.labels == spec.labels


@pytest.mark.parametrize("operation", ["create", "wait_ready", "endpoints", "start"])
def test_driver_error_fails_session_with_reason_and_cleans_up(session, fake_driver, operation):
    fake_driver.fail(operation, f"{operation} broke: image missing")
    services.session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == Session.Status.FAILED
    assert session.failure_reason == f"{operation} broke: image missing"
    assert session.stopped_at is not None
    assert not fake_driver.sandboxes
    assert Sandbox.objects.get(session=session).state == Sandbox.State.DESTROYED


def test_runner_refusing_start_fails_session_with_reason(session, fake_driver):
    fake_driver.fail_runner("bash: not found", status=400)
    services.session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == Session.Status.FAILED
    assert session.failure_reason == "starting the harness failed: bash: not found"
    assert not fake_driver.sandboxes


def test_unexpected_error_in_task_fails_session(session, fake_driver):
    from sandboxes import tasks

    def explode():
        raise RuntimeError("runner said no")

    fake_driver.before("start", explode)
    with pytest.raises(RuntimeError):
        tasks.session_bring_up(str(session.id))
    session.refresh_from_db()
    assert session.status == Session.Status.FAILED
    assert session.failure_reason == "bring-up failed: runner said no"
    assert not fake_driver.sandboxes


def test_bring_up_twice_creates_one_sandbox(ready_session, fake_driver):
    services.session_bring_up(ready_session.id)
    assert Sandbox.objects.filter(session=ready_session).count() == 1
    assert len(fake_driver.sandboxes) == 1


def test_bring_up_of_unknown_session_is_a_no_op(fake_driver):
    services.session_bring_up("8a4a0d1e-0000-4000-8000-000000000000")
    assert not fake_driver.sandboxes


@pytest.mark.parametrize("operation", ["wait_ready", "start"])
def test_stop_during_bring_up_is_not_resurrected(session, fake_driver, operation):
    fake_driver.before(operation, lambda: services.session_stop(Session.objects.get(pk=session.pk)))
    services.session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == Session.Status.DEAD
    assert not fake_driver.sandboxes  # the sandbox made meanwhile is destroyed
    assert not Sandbox.objects.exclude(state=Sandbox.State.DESTROYED).exists()


def test_session_deleted_during_bring_up_destroys_sandbox(session, fake_driver):
    fake_driver.before("wait_ready", lambda: Session.objects.filter(pk=session.pk).delete())
    services.session_bring_up(session.id)
    assert not fake_driver.sandboxes
    assert Sandbox.objects.get().state == Sandbox.State.DESTROYED


def test_stop_is_idempotent(ready_session, fake_driver):
    assert services.session_stop(ready_session) is True
    first_stop = ready_session.stopped_at
    assert services.session_stop(Session.objects.get(pk=ready_session.pk)) is False
    ready_session.refresh_from_db()
    assert ready_session.status == Session.Status.DEAD
    assert ready_session.stopped_at == first_stop
    assert len(fake_driver.destroyed) == 1


def test_stop_cannot_turn_failed_into_dead(session, fake_driver):
    fake_driver.fail("create", "boom")
    services.session_bring_up(session.id)
    assert services.session_stop(Session.objects.get(pk=session.pk)) is False
    assert Session.objects.get(pk=session.pk).status == Session.Status.FAILED


def test_stop_retries_destroy_that_failed(ready_session, fake_driver):
    fake_driver.fail("destroy", "api down", retryable=True)
    assert services.session_stop(ready_session) is True
    assert Sandbox.objects.get().state == Sandbox.State.RUNNING  # left for a retry
    fake_driver.failures.clear()
    services.session_stop(ready_session)
    assert Sandbox.objects.get().state == Sandbox.State.DESTROYED


def test_session_env_vars_are_validated(agent, user):
    with pytest.raises(services.SessionInvalid, match="reserved"):
        services.session_create(agent=agent, user=user, env_vars={"GIT_TOKEN": "x"})
    assert not Session.objects.exists()


def test_every_name_the_platform_sets_in_a_harness_env_is_reserved(settings):
    # Whichever driver and harness: a secret of that name would replace it with its stub.
    settings.LITELLM_API_BASE = "http://gateway.example"
    agent = Agent(harness_id="opencode", prompt="p", repo_url="https://git.example/r", model="m")
    env = {
        **local_jail.sandbox_env(has_tools=True),
        **KubernetesDriver.sandbox_env(),
        **services._harness_env(Session(agent=agent, harness_id=agent.harness_id), stubs={}),
    }
    assert env_var_errors(dict.fromkeys(env, "v")) == {
        "env_vars": [f"reserved names (set by the platform): {', '.join(sorted(env))}"]
    }


def test_session_env_vars_are_encrypted(agent, user):
    session = services.session_create(agent=agent, user=user, env_vars={"EXTRA": "plain-value"})
    assert "plain-value" not in str(Session.objects.get(pk=session.pk).env_vars)


def test_touch_updates_last_seen_of_ready_sessions_only(ready_session, agent, user, time_machine):
    creating = services.session_create(agent=agent, user=user)
    time_machine.move_to("2030-01-01T00:00:00Z")
    services.session_touch(ready_session.id)
    services.session_touch(creating.id)
    ready_session.refresh_from_db()
    creating.refresh_from_db()
    assert ready_session.last_seen_at.year == 2030
    assert creating.last_seen_at is None


def test_touch_writes_at_most_once_per_interval(ready_session, time_machine):
    time_machine.move_to("2030-01-01T00:00:00Z", tick=False)
    services.session_touch(ready_session.id)
    time_machine.move_to("2030-01-01T00:00:05Z", tick=False)
    services.session_touch(ready_session.id)
    ready_session.refresh_from_db()
    assert ready_session.last_seen_at.second == 0


def test_session_runner_gives_url_and_token_of_ready_session(ready_session, fake_driver):
    url, token = services.session_runner(ready_session)
    sandbox_id = str(ready_session.sandboxes.get().id)
    assert url == f"fake://{sandbox_id}"
    assert token == fake_driver.sandboxes[sandbox_id].spec.runner_token
    services.session_stop(ready_session)
    with pytest.raises(services.Conflict):
        services.session_runner(ready_session)


def test_tty_token_is_bound_to_its_session(ready_session, agent, user):
    other = services.session_create(agent=agent, user=user)
    token = services.tty_token_mint(ready_session)
    assert services.tty_token_check(token, ready_session.id)
    assert services.tty_token_check(token, str(ready_session.id))
    assert not services.tty_token_check(token, other.id)
    assert not services.tty_token_check(token + "x", ready_session.id)
    assert not services.tty_token_check("", ready_session.id)


def test_tty_token_expires(ready_session, settings, time_machine):
    settings.LAP_TTY_TOKEN_TTL = 60
    time_machine.move_to("2030-01-01T00:00:00Z", tick=False)
    token = services.tty_token_mint(ready_session)
    time_machine.move_to("2030-01-01T00:00:59Z", tick=False)
    assert services.tty_token_check(token, ready_session.id)
    time_machine.move_to("2030-01-01T00:01:01Z", tick=False)
    assert not services.tty_token_check(token, ready_session.id)


def test_driver_check_reports_driver_failure(fake_driver):
    assert services.driver_check() is None
    fake_driver.fail("list", "cluster unreachable")
    assert "cluster unreachable" in services.driver_check()


def test_ensure_schedules_is_idempotent(db):
    from django_q.models import Schedule

    services.ensure_schedules()
    services.ensure_schedules()
    schedule = Schedule.objects.get()
    assert schedule.func == "sandboxes.tasks.sandbox_reconcile"
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == ("I", 1, -1)
