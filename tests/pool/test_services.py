from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from pool import services
from pool.models import PoolTarget
from sandboxes import services as sandbox_services
from sandboxes.drivers.base import SandboxSpec
from sandboxes.models import Sandbox, Session
from sandboxes.reconcile import reconcile
from tests.conftest import SECRET

pytestmark = pytest.mark.django_db


def provision() -> None:
    """Run the provisioning tasks a top-up enqueues after commit (tests run in a transaction)."""
    for pk in Sandbox.objects.filter(pool_state="provisioning").values_list("pk", flat=True):
        sandbox_services.pool_sandbox_provision(pk)


def warm(count: int, harness: str = "shell") -> list[Sandbox]:
    PoolTarget.objects.update_or_create(harness_id=harness, defaults={"target": count})
    services.pool_top_up()
    provision()
    return list(Sandbox.objects.filter(pool_state="warm", harness_id=harness))


def create(agent, user, **kwargs) -> Session:
    session = sandbox_services.session_create(agent=agent, user=user, **kwargs)
    sandbox_services.session_start(session.id)  # what on_commit runs after the request
    session.refresh_from_db()
    return session


def test_top_up_provisions_warm_sandboxes_without_secrets_or_harness(fake_driver):
    sandboxes = warm(2)
    assert len(sandboxes) == 2
    for sandbox in sandboxes:
        fake = fake_driver.sandboxes[str(sandbox.id)]
        assert fake.started is None  # no harness
        assert fake.vault is not None and fake.vault.policy is None  # sidecar up, no bundle
        assert sandbox.session_id is None and sandbox.state == "running"
        assert fake.spec.labels["lap.pool/harness"] == "shell"
        assert not sandbox.vault_keys.exists()  # no stub minted yet
    assert services.pool_top_up() == {}  # at target: nothing more


def test_top_up_respects_the_global_cap(settings, fake_driver):
    settings.LAP_POOL_MAX = 3
    PoolTarget.objects.update_or_create(harness_id="shell", defaults={"target": 2})
    PoolTarget.objects.update_or_create(harness_id="codex", defaults={"target": 2})
    assert services.pool_top_up() == {"codex": 2, "shell": 1}
    assert Sandbox.objects.filter(pool_state="provisioning").count() == 3


def test_claim_binds_a_warm_sandbox_pushes_secrets_and_starts(
    agent, user, fake_driver, django_capture_on_commit_callbacks
):
    (sandbox,) = warm(1)
    with django_capture_on_commit_callbacks(execute=True):
        session = create(agent, user, env_vars={"EXTRA": "x1"})
    provision()
    assert (session.status, session.phase) == ("ready", "ready")
    sandbox.refresh_from_db()
    assert (sandbox.session_id, sandbox.pool_state) == (session.id, "claimed")
    fake = fake_driver.sandboxes[str(sandbox.id)]
    stubs = {key.name: key.stub for key in sandbox.vault_keys.all()}
    assert set(stubs) == {"GITHUB_TOKEN", "EXTRA"}
    assert fake.started["env"]["GITHUB_TOKEN"] == stubs["GITHUB_TOKEN"]
    assert SECRET not in str(fake.started)
    assert fake.vault.policy is not None  # the sealed bundle arrived
    # the claim topped the pool up again
    assert Sandbox.objects.filter(pool_state="warm", session__isnull=True).count() == 1


def test_claim_compare_and_set_skips_a_sandbox_another_claimer_won(agent, user, fake_driver):
    first, second = warm(2)
    session = Session.objects.create(agent=agent, harness_id="shell")
    # Another process wins the oldest candidate between our read and our update.
    Sandbox.objects.filter(pk=first.pk).update(pool_state="claimed")
    taken = sandbox_services._pool_take(session)
    assert taken.pk == second.pk
    assert sandbox_services._pool_take(session) is None


def test_no_warm_sandbox_means_a_cold_start(agent, user, fake_driver):
    PoolTarget.objects.all().delete()
    session = create(agent, user)
    assert session.status == "ready"
    assert Sandbox.objects.get(session=session).pool_state == ""


@pytest.mark.parametrize("failure", ["vault", "start"])
def test_a_failed_claim_destroys_the_sandbox_and_starts_cold(agent, user, fake_driver, failure):
    (sandbox,) = warm(1)
    PoolTarget.objects.all().delete()  # no top-up, so the only warm one is the broken one
    if failure == "vault":
        fake_driver.fail("vault", "sidecar gone")
    else:
        fake_driver.fail_runner("runner refused")

    def heal() -> None:  # the cold sandbox must work
        fake_driver.failures.clear()

    fake_driver.before("create", heal)
    session = create(agent, user)
    assert (session.status, session.failure_reason) == ("ready", "")
    sandbox.refresh_from_db()
    assert (sandbox.pool_state, sandbox.state, sandbox.session_id) == ("broken", "destroyed", None)
    assert str(sandbox.id) in fake_driver.destroyed
    cold = Sandbox.objects.get(session=session, state="running")
    assert cold.pool_state == ""


def test_recycles_warm_sandboxes_past_max_age(settings, fake_driver, time_machine):
    settings.LAP_POOL_MAX_AGE = 600
    (old,) = warm(1)
    time_machine.move_to(timezone.now() + timedelta(seconds=601))
    counts = services.pool_maintain()
    provision()
    assert counts["recycled"] == 1
    old.refresh_from_db()
    assert (old.pool_state, old.state) == ("retired", "destroyed")
    assert Sandbox.objects.filter(pool_state="warm").exclude(pk=old.pk).count() == 1


def test_removes_broken_warm_sandboxes_and_replaces_them(fake_driver):
    (broken,) = warm(1)
    fake_driver.vanish(str(broken.id))  # its processes died
    counts = services.pool_maintain()
    provision()
    assert counts["broken"] == 1
    broken.refresh_from_db()
    assert broken.pool_state == "broken"
    assert Sandbox.objects.filter(pool_state="warm").exclude(pk=broken.pk).count() == 1


def test_a_sandbox_claimed_during_its_health_check_is_kept_and_not_called_broken(
    agent, user, fake_driver, monkeypatch, caplog
):
    (sandbox,) = warm(1)

    def claimed_meanwhile(checked: Sandbox) -> str:
        session = create(agent, user)  # the claim lands between the listing and the retire
        assert Sandbox.objects.get(session=session).pk == checked.pk
        return "runner: unexpected health {'started': True}"

    monkeypatch.setattr(services, "pool_sandbox_check", claimed_meanwhile)
    assert "broken" not in services.pool_maintain()
    sandbox.refresh_from_db()
    assert (sandbox.pool_state, sandbox.state) == ("claimed", "running")
    assert "broken" not in caplog.text


def test_maintenance_never_touches_claimed_sandboxes(agent, user, fake_driver, settings):
    settings.LAP_POOL_MAX_AGE = 0
    warm(1)
    session = create(agent, user)
    services.pool_maintain()
    session.refresh_from_db()
    assert session.status == "ready"
    assert Sandbox.objects.get(session=session).state == "running"


def test_provision_failure_is_recorded(fake_driver):
    fake_driver.fail("create", "no room")
    assert warm(1) == []
    assert services.pool_provision_failures() == {"shell": 1}


def test_reconcile_leaves_warm_sandboxes_alone(fake_driver):
    warm(2)
    assert reconcile() == {}
    assert Sandbox.objects.filter(pool_state="warm", state="running").count() == 2
    assert len(fake_driver.sandboxes) == 2


def test_reconcile_destroys_a_claimed_sandbox_of_an_ended_session(agent, user, fake_driver):
    warm(1)
    PoolTarget.objects.all().delete()
    session = create(agent, user)
    Session.objects.filter(pk=session.pk).update(status="dead")
    assert reconcile() == {"orphans": 1}
    assert not fake_driver.sandboxes


def test_seed_default_is_idempotent():
    PoolTarget.objects.all().delete()
    assert services.pool_seed_default()
    PoolTarget.objects.filter(harness_id="shell").update(target=0)
    assert not services.pool_seed_default()
    assert PoolTarget.objects.get().target == 0


def test_metrics_report_pool_state_claims_and_failures(api_client, agent, user, fake_driver):
    warm(2)
    create(agent, user)
    fake_driver.fail("create", "no room")
    PoolTarget.objects.update_or_create(harness_id="codex", defaults={"target": 1})
    services.pool_top_up()
    provision()
    text = api_client.get("/metrics", HTTP_ACCEPT="text/plain;version=0.0.4").content.decode()
    assert 'lap_pool_sandboxes{harness="shell",state="warm"} 1.0' in text
    assert 'lap_pool_sandboxes{harness="shell",state="claimed"} 1.0' in text
    assert 'lap_pool_provision_failures_total{harness="codex"} 1.0' in text
    assert 'lap_pool_claims_total{harness="shell",outcome="hit"}' in text
    assert 'lap_pool_claim_seconds_bucket{harness="shell",le="0.05"}' in text


def test_lap_down_stops_sessions_retires_the_pool_and_destroys_strays(agent, user, fake_driver):
    warm(2)
    session = create(agent, user)  # takes one of the two
    fake_driver.create(SandboxSpec("stray", "shell", "t"))  # a sandbox no row knows
    out = io.StringIO()
    call_command("lap_down", stdout=out)
    assert out.getvalue().strip() == (
        "stopped 1 session(s), retired 1 warm sandbox(es), destroyed 1 other sandbox(es)"
    )
    assert not fake_driver.sandboxes
    session.refresh_from_db()
    assert (session.status, session.failure_reason) == ("dead", "the platform was shut down")
    assert not Sandbox.objects.filter(state="running").exists()
    call_command("lap_down", stdout=out)  # nothing left: nothing to do
    assert out.getvalue().splitlines()[-1].startswith("stopped 0 session(s), retired 0")
