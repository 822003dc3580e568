"""The warm pool: targets per harness, top-up, recycling and repair. The only code that
changes pool state; the sandboxes themselves are made and destroyed by ``sandboxes.services``
(``pool_sandbox_*``), and sessions claim them there (``session_claim_warm``), in the request
that creates the session.

Who touches what, so maintenance and reconcile never fight: pool maintenance acts only on
rows in ``provisioning`` or ``warm`` with no session, each change a compare-and-set against a
claim (``pool_sandbox_retire``); reconcile leaves exactly those alone and treats a claimed
sandbox like any other session's.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from typing import TypedDict

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone
from django_q.tasks import async_task

from agents.harnesses import harness_ids
from pool.models import PoolTarget
from sandboxes.models import Sandbox
from sandboxes.services import (
    ensure_schedules,
    pool_sandbox_check,
    pool_sandbox_reserve,
    pool_sandbox_retire,
)

logger = logging.getLogger(__name__)

DEFAULT_TARGETS = {"shell": 2}  # the embedded default, seeded by lap_bootstrap
ACTIVE = (Sandbox.PoolState.PROVISIONING, Sandbox.PoolState.WARM)
SCHEDULES = (
    # (name, dotted task path, every N minutes)
    ("lap.pool.top_up", "pool.tasks.pool_top_up", 1),
    ("lap.pool.maintain", "pool.tasks.pool_maintain", 1),
)


class HarnessPool(TypedDict):
    target: int
    warm: int
    provisioning: int
    claimed: int


# --- reading -------------------------------------------------------------------------


def pool_status() -> dict[str, HarnessPool]:
    """Per known harness: its target and how many sandboxes are warm, provisioning, claimed.

    ``claimed`` counts pool sandboxes serving a session now (running).
    """
    status: dict[str, HarnessPool] = {
        harness: {"target": 0, "warm": 0, "provisioning": 0, "claimed": 0}
        for harness in harness_ids()
    }
    for harness, target in PoolTarget.objects.values_list("harness_id", "target"):
        if harness in status:
            status[harness]["target"] = target
    counted = (
        Sandbox.objects.filter(
            Q(pool_state__in=ACTIVE)
            | Q(pool_state=Sandbox.PoolState.CLAIMED, state=Sandbox.State.RUNNING)
        )
        .values("harness_id", "pool_state")
        .annotate(n=Count("id"))
    )
    for row in counted:
        if row["harness_id"] in status:
            status[row["harness_id"]][row["pool_state"]] = row["n"]
    return status


def pool_provision_failures() -> dict[str, int]:
    """Harness → warm sandboxes whose provisioning ever failed (rows are kept: a total)."""
    rows = (
        Sandbox.objects.filter(pool_state=Sandbox.PoolState.FAILED)
        .values_list("harness_id")
        .annotate(n=Count("id"))
    )
    return dict(rows)


# --- targets -------------------------------------------------------------------------


def pool_target_errors(targets: Mapping[str, int]) -> dict[str, str]:
    """Harness id → what is wrong with its proposed target (unknown harness, negative, above
    ``LAP_POOL_MAX``); empty when every target is acceptable."""
    known = set(harness_ids())
    problems = {
        harness: f"unknown harness (known: {', '.join(sorted(known))})"
        for harness in targets
        if harness not in known
    }
    for harness, target in targets.items():
        if harness in problems:
            continue
        if target < 0:
            problems[harness] = "must be at least 0"
        elif target > settings.LAP_POOL_MAX:
            problems[harness] = f"must be at most LAP_POOL_MAX ({settings.LAP_POOL_MAX})"
    return problems


def pool_targets_set(targets: Mapping[str, int]) -> dict[str, HarnessPool]:
    """Set the targets of the given harnesses (others keep theirs) and top the pool up.

    Callers validate with ``pool_target_errors`` first.
    """
    with transaction.atomic():
        for harness, target in targets.items():
            PoolTarget.objects.update_or_create(harness_id=harness, defaults={"target": target})
        transaction.on_commit(lambda: async_task("pool.tasks.pool_top_up"))
    return pool_status()


def pool_seed_default() -> bool:
    """Give a fresh install ``DEFAULT_TARGETS``; idempotent (never overrides a set target)."""
    if PoolTarget.objects.exists():
        return False
    for harness, target in DEFAULT_TARGETS.items():
        PoolTarget.objects.get_or_create(harness_id=harness, defaults={"target": target})
    return True


def pool_ensure_schedules() -> None:
    """Create or update the pool's django-q2 schedules (top-up, maintenance). Idempotent."""
    ensure_schedules(SCHEDULES)


# --- top-up and maintenance ----------------------------------------------------------


def pool_top_up() -> dict[str, int]:
    """Reserve sandboxes up to each harness's target, within ``LAP_POOL_MAX`` over all.

    The count and the reservations happen under a lock on the targets (``SELECT … FOR
    UPDATE`` on Postgres; SQLite serialises writers), so concurrent top-ups do not
    overshoot. Each reserved sandbox is booted by its own task (``pool_provision``), so
    the workers provision in parallel. Returns how many it reserved per harness.
    """
    reserved: dict[str, int] = {}
    with transaction.atomic():
        targets = list(PoolTarget.objects.select_for_update().filter(target__gt=0))
        active = Counter(
            dict(
                Sandbox.objects.filter(pool_state__in=ACTIVE, session__isnull=True)
                .values_list("harness_id")
                .annotate(n=Count("id"))
            )
        )
        room = settings.LAP_POOL_MAX - sum(active.values())
        known = set(harness_ids())
        ids: list[str] = []
        for target in targets:
            if target.harness_id not in known:
                continue
            missing = min(target.target - active[target.harness_id], room)
            for _ in range(max(missing, 0)):
                ids.append(str(pool_sandbox_reserve(target.harness_id).id))
            if missing > 0:
                reserved[target.harness_id] = missing
                room -= missing
        for sandbox_id in ids:
            transaction.on_commit(
                lambda sandbox_id=sandbox_id: async_task("pool.tasks.pool_provision", sandbox_id)
            )
    return reserved


def pool_maintain() -> dict[str, int]:
    """Recycle and repair the unclaimed pool; claimed sandboxes are never touched.

    - warm sandboxes older than ``LAP_POOL_MAX_AGE`` are destroyed (``retired``);
    - warm sandboxes whose runner or vault fails its health check are destroyed (``broken``);
    - sandboxes still provisioning after ``LAP_CREATING_TIMEOUT`` (a lost task) are
      destroyed (``failed``).

    Then the pool is topped up. Returns counts of what it did.
    """
    counts: Counter[str] = Counter()
    now = timezone.now()
    unclaimed = Sandbox.objects.filter(session__isnull=True)
    old = now - timedelta(seconds=settings.LAP_POOL_MAX_AGE)
    for sandbox in unclaimed.filter(pool_state=Sandbox.PoolState.WARM, ready_at__lt=old):
        if pool_sandbox_retire(sandbox, Sandbox.PoolState.RETIRED, "past LAP_POOL_MAX_AGE"):
            counts["recycled"] += 1
    for sandbox in unclaimed.filter(pool_state=Sandbox.PoolState.WARM):
        problem = pool_sandbox_check(sandbox)
        if problem is None:
            continue
        if pool_sandbox_retire(sandbox, Sandbox.PoolState.BROKEN, problem):
            logger.warning("warm sandbox %s was broken, replaced: %s", sandbox.id, problem)
            counts["broken"] += 1
    stuck = now - timedelta(seconds=settings.LAP_CREATING_TIMEOUT)
    for sandbox in unclaimed.filter(
        pool_state=Sandbox.PoolState.PROVISIONING, created_at__lt=stuck
    ):
        if pool_sandbox_retire(sandbox, Sandbox.PoolState.FAILED, "provisioning timed out"):
            counts["stuck"] += 1
    counts.update({f"reserved_{h}": n for h, n in pool_top_up().items()})
    return dict(counts)
