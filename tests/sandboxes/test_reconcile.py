from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from sandboxes import services, tasks
from sandboxes.models import Sandbox, Session
from sandboxes.reconcile import reconcile

pytestmark = pytest.mark.django_db


def sandbox_id(session: Session) -> str:
    return str(session.sandboxes.get().id)


def test_nothing_to_do_on_a_healthy_platform(ready_session, fake_driver):
    assert reconcile() == {}
    ready_session.refresh_from_db()
    assert ready_session.status == Session.Status.READY
    assert len(fake_driver.sandboxes) == 1


def test_fails_sessions_stuck_in_creating(session, settings, time_machine):
    settings.LAP_CREATING_TIMEOUT = 300
    time_machine.move_to(timezone.now() + timedelta(seconds=299))
    assert reconcile() == {}
    time_machine.move_to(timezone.now() + timedelta(seconds=2))
    assert reconcile() == {"timed_out": 1}
    session.refresh_from_db()
    assert session.status == Session.Status.FAILED
    assert session.failure_reason == "creating timed out after 300s"


def test_stuck_session_with_a_sandbox_gets_it_destroyed(session, fake_driver, settings):
    settings.LAP_CREATING_TIMEOUT = 0
    services.session_bring_up(session.id)  # makes it ready; put it back to look stuck
    Session.objects.filter(pk=session.pk).update(
        status=Session.Status.CREATING, phase=Session.Phase.STARTING_HARNESS
    )
    assert reconcile()["timed_out"] == 1
    session.refresh_from_db()
    assert "in phase starting_harness" in session.failure_reason
    assert not fake_driver.sandboxes


def test_creating_session_whose_sandbox_is_stuck_pending_fails_with_the_reason(
    session, fake_driver
):
    services.session_bring_up(session.id)  # then put it back to look mid bring-up
    Session.objects.filter(pk=session.pk).update(
        status=Session.Status.CREATING, phase=Session.Phase.STARTING_VAULT
    )
    sandbox = fake_driver.sandboxes[sandbox_id(session)]
    sandbox.state, sandbox.reason = "pending", ""  # still coming up: left alone
    assert reconcile() == {}
    sandbox.reason = 'runner: ImagePullBackOff: Back-off pulling image "lap/harness-shell:x"'
    assert reconcile() == {"stuck": 1}
    session.refresh_from_db()
    assert session.status == Session.Status.FAILED
    assert session.failure_reason == sandbox.reason
    assert not fake_driver.sandboxes


def test_ready_session_whose_sandbox_exited_is_dead_with_reason(ready_session, fake_driver):
    fake_driver.exit(sandbox_id(ready_session), "OOMKilled")
    assert reconcile()["vanished"] == 1
    ready_session.refresh_from_db()
    assert ready_session.status == Session.Status.DEAD
    assert ready_session.failure_reason == "sandbox exited: OOMKilled"
    assert not fake_driver.sandboxes


def test_ready_session_whose_sandbox_vanished_is_dead(ready_session, fake_driver):
    fake_driver.vanish(sandbox_id(ready_session))
    reconcile()
    ready_session.refresh_from_db()
    assert (ready_session.status, ready_session.failure_reason) == ("dead", "sandbox vanished")
    assert Sandbox.objects.get().state == Sandbox.State.DESTROYED


def test_destroys_sandboxes_without_a_live_session(ready_session, fake_driver):
    # A sandbox whose stop failed to destroy it, and one the database never knew.
    fake_driver.fail("destroy", "busy")
    services.session_stop(ready_session)
    fake_driver.failures.clear()
    fake_driver.add_orphan("f0000000-0000-4000-8000-000000000001")
    assert reconcile() == {"orphans": 2}
    assert not fake_driver.sandboxes
    assert Sandbox.objects.get().state == Sandbox.State.DESTROYED


def test_destroys_pool_labelled_sandboxes_the_database_does_not_know(fake_driver, db):
    # Warm sandboxes with a row are left to pool maintenance (tests/pool); one without is lost.
    fake_driver.add_orphan(
        "f0000000-0000-4000-8000-000000000002", labels={"lap.pool/harness": "shell"}
    )
    assert reconcile() == {"orphans": 1}
    assert not fake_driver.sandboxes


def test_creating_sessions_keep_their_sandboxes(session, fake_driver):
    fake_driver.before("wait_ready", lambda: reconcile())
    services.session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == Session.Status.READY
    assert len(fake_driver.sandboxes) == 1


def test_reaps_idle_sessions(ready_session, fake_driver, settings, time_machine):
    settings.LAP_IDLE_TIMEOUT = 3600
    time_machine.move_to(ready_session.last_seen_at + timedelta(seconds=3599))
    assert reconcile() == {}
    services.session_touch(ready_session.id)
    time_machine.move_to(timezone.now() + timedelta(seconds=3601))
    assert reconcile() == {"idle": 1}
    ready_session.refresh_from_db()
    assert (ready_session.status, ready_session.failure_reason) == ("dead", "idle timeout")
    assert not fake_driver.sandboxes


def test_driver_listing_failure_still_handles_the_database(session, fake_driver, settings):
    settings.LAP_CREATING_TIMEOUT = 0
    fake_driver.fail("list", "apiserver down", retryable=True)
    assert reconcile() == {"timed_out": 1, "driver_errors": 1}


def test_reconcile_task_runs_the_service(ready_session, fake_driver):
    fake_driver.vanish(sandbox_id(ready_session))
    assert tasks.sandbox_reconcile() == {"vanished": 1}


def test_restarts_a_dead_vault_sidecar_and_pushes_its_bundle_again(ready_session, fake_driver):
    sandbox = sandbox_id(ready_session)
    pushed = fake_driver.vault(sandbox).policy.version
    fake_driver.kill_vault(sandbox)
    assert reconcile() == {"vault_restarted": 1}
    policy = fake_driver.vault(sandbox).policy  # a new Vault: the restarted sidecar's
    assert policy is not None and policy.version > pushed
    assert [s.name for s in policy.by_stub.values()] == ["GITHUB_TOKEN"]
    assert reconcile() == {}
    ready_session.refresh_from_db()
    assert ready_session.status == Session.Status.READY


def test_pushes_again_to_a_sidecar_restarted_by_its_runtime(ready_session, fake_driver):
    """A sidecar container restarted by its pod answers, but with no bundle."""
    sandbox = sandbox_id(ready_session)
    vault = fake_driver.vault(sandbox)
    fake_driver.sandboxes[sandbox].vault = type(vault)(vault.key, sandbox_id=sandbox)
    assert reconcile() == {"vault_repushed": 1}
    assert fake_driver.vault(sandbox).policy is not None


def test_a_vault_that_cannot_be_restored_waits_for_the_next_tick(ready_session, fake_driver):
    sandbox = sandbox_id(ready_session)
    fake_driver.kill_vault(sandbox)
    fake_driver.fail("vault_restart", "no luck")
    assert reconcile() == {}
    ready_session.refresh_from_db()
    assert ready_session.status == Session.Status.READY
    del fake_driver.failures["vault_restart"]
    assert reconcile() == {"vault_restarted": 1}
