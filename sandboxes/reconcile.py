"""Reconcile: bring the database and the driver's sandboxes into agreement (a django-q2
schedule, ``sandboxes.tasks.sandbox_reconcile``). Level-triggered: each run looks at what is,
not at what happened, so a missed or repeated run does no harm."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from lapsite.errors import LapError
from sandboxes.drivers.base import (
    LABEL_POOL_HARNESS,
    LABEL_SANDBOX,
    DriverError,
    SandboxDriver,
    SandboxHandle,
)
from sandboxes.models import Sandbox, Session
from sandboxes.registry import get_driver
from sandboxes.services import live_sandbox, sandbox_destroy, session_fail, session_stop
from vault.services import vault_push, vault_resync

logger = logging.getLogger(__name__)


def _is_pool_owned(row: Sandbox | None) -> bool:
    """An unclaimed warm-pool sandbox: pool maintenance's, never reconcile's."""
    return (
        row is not None
        and row.session_id is None
        and row.pool_state in (Sandbox.PoolState.PROVISIONING, Sandbox.PoolState.WARM)
    )


def _reconcile_with_driver(
    driver: SandboxDriver, ready_ids: list[uuid.UUID], creating_ids: list[uuid.UUID]
) -> Counter[str]:
    counts: Counter[str] = Counter()
    infos = {
        info.labels.get(LABEL_SANDBOX) or info.handle.sandbox_id: info for info in driver.list()
    }
    # A sandbox stuck before it is ready (an image that cannot be pulled, a pod no node can
    # take) fails its session with the driver's reason rather than at the creating timeout.
    handled: set[str] = set()
    starting = Sandbox.objects.filter(
        session_id__in=creating_ids, session__status=Session.Status.CREATING
    ).exclude(state=Sandbox.State.DESTROYED)
    for sandbox in starting.select_related("session"):
        info = infos.get(str(sandbox.id))
        if info is not None and info.state == "pending" and info.reason:
            if session_fail(sandbox.session, info.reason):
                counts["stuck"] += 1
            handled.add(str(sandbox.id))  # destroyed with its session
    for session in Session.objects.filter(pk__in=ready_ids, status=Session.Status.READY):
        sandbox = live_sandbox(session)
        info = infos.get(str(sandbox.id)) if sandbox else None
        if info is None:
            reason = "sandbox vanished"
        elif info.state == "exited":
            reason = f"sandbox exited: {info.reason}" if info.reason else "sandbox exited"
        else:
            continue
        if session_stop(session, reason=reason):
            counts["vanished"] += 1
    listed = [uuid.UUID(key) for key in infos if _is_uuid(key)]
    rows = {
        str(row.id): row for row in Sandbox.objects.filter(pk__in=listed).select_related("session")
    }
    for sandbox_id, info in infos.items():
        if sandbox_id in handled:
            continue
        row = rows.get(sandbox_id)
        in_use = row is not None and row.session is not None and row.session.is_live
        if in_use or _is_pool_owned(row):
            continue
        if row is not None:
            if sandbox_destroy(driver, row):
                counts["orphans"] += 1
            continue
        try:
            driver.destroy(info.handle)
            counts["orphans"] += 1
        except DriverError as error:
            logger.warning("destroying orphan sandbox %s failed: %s", sandbox_id, error)
    # Rows of ended sessions whose sandbox the driver no longer knows: already gone.
    ended = Q(session__isnull=False) & ~Q(session__status__in=Session.LIVE)
    detached = Q(session__isnull=True) & ~Q(labels__has_key=LABEL_POOL_HARNESS)
    Sandbox.objects.exclude(state=Sandbox.State.DESTROYED).exclude(pk__in=listed).filter(
        ended | detached
    ).update(state=Sandbox.State.DESTROYED, destroyed_at=timezone.now())
    return counts


def _vaults_heal(driver: SandboxDriver) -> Counter[str]:
    """Ready sessions' vault sidecars that lost their bundle get it again; dead ones are
    restarted by the driver first. Until then their sandbox's egress fails closed."""
    counts: Counter[str] = Counter()
    sandboxes = Sandbox.objects.filter(
        session__status=Session.Status.READY,
        state=Sandbox.State.RUNNING,
        vault__pushed_version__isnull=False,
    )
    for sandbox in sandboxes:
        try:
            if vault_resync(sandbox):
                counts["vault_repushed"] += 1
            continue
        except LapError:
            pass  # no answer: the sidecar is gone
        handle = SandboxHandle(sandbox_id=str(sandbox.id), driver=sandbox.driver, ref=sandbox.ref)
        try:
            if driver.vault_restart(handle):
                driver.wait_ready(handle, timeout=float(settings.LAP_CREATING_TIMEOUT))
            vault_push(sandbox)
        except (DriverError, LapError) as error:
            reason = error.message if isinstance(error, LapError) else str(error)
            logger.warning("vault sidecar of sandbox %s not restored: %s", sandbox.id, reason)
            continue
        counts["vault_restarted"] += 1
    return counts


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def reconcile() -> dict[str, int]:
    """Bring the database and the driver's sandboxes into agreement. Level-triggered.

    Fails sessions stuck in ``creating`` past ``LAP_CREATING_TIMEOUT``, or whose
    sandbox the driver reports stuck while pending (with its reason, e.g.
    ``ImagePullBackOff: …``), reaps ready sessions idle past ``LAP_IDLE_TIMEOUT``,
    marks ready sessions whose sandbox vanished or exited as dead (with the driver's
    reason), destroys sandboxes that belong to no live session and restores the vault
    sidecars of ready sessions that died or lost their bundle. Returns counts of what it did.
    """
    now = timezone.now()
    counts: Counter[str] = Counter()
    creating_cutoff = now - timedelta(seconds=settings.LAP_CREATING_TIMEOUT)
    creating = Session.objects.filter(status=Session.Status.CREATING).annotate(
        since=Coalesce("restarted_at", "created_at")
    )
    for session in creating.filter(since__lt=creating_cutoff):
        where = f" in phase {session.phase}" if session.phase else ""
        reason = f"creating timed out after {settings.LAP_CREATING_TIMEOUT}s{where}"
        if session_fail(session, reason):
            counts["timed_out"] += 1
    idle_cutoff = now - timedelta(seconds=settings.LAP_IDLE_TIMEOUT)
    idle = Session.objects.filter(status=Session.Status.READY).annotate(
        seen=Coalesce("last_seen_at", "created_at")
    )
    for session in idle.filter(seen__lt=idle_cutoff):
        if session_stop(session, reason="idle timeout"):
            counts["idle"] += 1
    # Read the ready set before asking the driver, so a session that becomes
    # ready after the listing is not mistaken for one whose sandbox vanished.
    ready_ids = list(
        Session.objects.filter(status=Session.Status.READY).values_list("pk", flat=True)
    )
    creating_ids = list(
        Session.objects.filter(status=Session.Status.CREATING).values_list("pk", flat=True)
    )
    try:
        driver = get_driver()
        counts.update(_reconcile_with_driver(driver, ready_ids, creating_ids))
        counts.update(_vaults_heal(driver))
    except DriverError as error:
        logger.warning("reconcile: the driver cannot list sandboxes: %s", error)
        counts["driver_errors"] += 1
    return dict(counts)
