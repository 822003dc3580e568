"""Claims racing for real: threads with their own database connections (committed data).

On Postgres (the CI's second run) this exercises row locks under READ COMMITTED; on SQLite
the writers are serialised by the database lock.
"""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from pool import services
from pool.models import PoolTarget
from sandboxes import services as sandbox_services
from sandboxes.models import Sandbox, Session

pytestmark = pytest.mark.django_db(transaction=True)


def test_three_concurrent_creates_on_a_pool_of_two(agent, user, fake_driver):
    PoolTarget.objects.update_or_create(harness_id="shell", defaults={"target": 2})
    PoolTarget.objects.exclude(harness_id="shell").delete()
    services.pool_top_up()  # outside a transaction: provisioned at once (q sync)
    warm_ids = set(Sandbox.objects.filter(pool_state="warm").values_list("pk", flat=True))
    assert len(warm_ids) == 2
    PoolTarget.objects.all().delete()  # no top-up during the race: exactly two warm ones
    barrier = threading.Barrier(3)
    created: list[Session] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            barrier.wait()
            created.append(sandbox_services.session_create(agent=agent, user=user))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    sessions = list(Session.objects.all())
    assert len(sessions) == 3
    assert {s.status for s in sessions} == {"ready"}
    sandboxes = list(Sandbox.objects.filter(session__in=sessions))
    assert len(sandboxes) == 3  # one each: no double claim
    assert len({s.session_id for s in sandboxes}) == 3
    claimed = {s.pk for s in sandboxes if s.pool_state == "claimed"}
    assert claimed == warm_ids
    assert sum(s.pool_state == "" for s in sandboxes) == 1  # the third started cold
