"""Session lifecycle: the only code that creates, changes or stops sessions and sandboxes.

Every status change is a compare-and-set (``Session.transition``), so the
operations here may race each other (a stop during bring-up, reconcile during
a stop) without resurrecting a session that another caller ended.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import uuid
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from agents.harnesses import harness_get
from agents.models import Agent
from agents.validation import env_var_errors, first_error
from lapsite.errors import Conflict, LapError, NotFound
from sandboxes.drivers.base import (
    LABEL_AGENT,
    LABEL_POOL_HARNESS,
    LABEL_SANDBOX,
    LABEL_SESSION,
    DriverError,
    EgressPolicy,
    SandboxDriver,
    SandboxHandle,
    SandboxInfo,
    SandboxSpec,
)
from sandboxes.models import Sandbox, Session, SessionMessage
from sandboxes.recordings import recording_keep
from sandboxes.registry import get_driver, runner_client
from sandboxes.runner_client import RunnerError
from vault import crypto
from vault.services import vault_prepare, vault_push, vault_set_control_url

logger = logging.getLogger(__name__)

LIVE = Session.LIVE
TTY_SALT = "lap.tty"
RUNNER_CWD = "/work"
TERMINAL_SIZE = (120, 40)  # cols, rows until the first client resizes
API_HARNESS_PORT = "4096"
# Terminal keystrokes touch the session constantly; one write per interval is enough.
TOUCH_INTERVAL = timedelta(seconds=15)
SCHEDULES = (
    # (name, dotted task path, every N minutes)
    ("lap.sandboxes.reconcile", "sandboxes.tasks.sandbox_reconcile", 1),
)


class SessionInvalid(LapError):
    code = "invalid"
    default_message = "invalid session request"


# --- reading -------------------------------------------------------------------------


def session_get(session_id: str | uuid.UUID) -> Session:
    """The session with this id; ``NotFound`` for unknown or malformed ids."""
    try:
        pk = uuid.UUID(str(session_id))
    except ValueError:
        raise NotFound(f"session '{session_id}' not found") from None
    session = Session.objects.select_related("agent").filter(pk=pk).first()
    if session is None:
        raise NotFound(f"session '{session_id}' not found")
    return session


def session_list(
    *, agent_id: str | None = None, status: str | None = None, limit: int = 50
) -> list[Session]:
    """Newest first; ``agent_id`` is an agent's id or name."""
    sessions = Session.objects.select_related("agent")
    if agent_id:
        try:
            sessions = sessions.filter(agent_id=uuid.UUID(agent_id))
        except ValueError:
            sessions = sessions.filter(agent__name=agent_id)
    if status:
        sessions = sessions.filter(status=status)
    return list(sessions[:limit])


def session_counts_by_status() -> dict[str, int]:
    counts = dict.fromkeys(Session.Status.values, 0)
    for row in Session.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def session_runner(session: Session) -> tuple[str, str]:
    """``(runner_url, runner_token)`` of a ready session's sandbox; ``Conflict`` otherwise."""
    sandbox = _live_sandbox(session) if session.status == Session.Status.READY else None
    if sandbox is None or not sandbox.runner_url:
        raise Conflict("session is not ready", code="not_ready")
    return sandbox.runner_url, crypto.decrypt(sandbox.runner_token)


def _live_sandbox(session: Session) -> Sandbox | None:
    return (
        Sandbox.objects.filter(session=session, state=Sandbox.State.RUNNING)
        .order_by("-created_at")
        .first()
    )


# --- create and bring-up -------------------------------------------------------------


def session_create(
    *,
    agent: Agent,
    user: AbstractBaseUser | None,
    title: str = "",
    initial_prompt: str = "",
    env_vars: Mapping[str, str] | None = None,
) -> Session:
    """Record a new session in ``creating`` and enqueue its bring-up after commit.

    Returns at once; the caller polls the session. Raises ``SessionInvalid`` for
    bad ``env_vars`` and ``Conflict`` when the agent's harness is unknown.
    """
    env_plain = dict(env_vars or {})
    errors = env_var_errors(env_plain)
    if errors:
        raise SessionInvalid(first_error(errors))
    if harness_get(agent.harness_id) is None:
        raise Conflict(f"agent's harness {agent.harness_id!r} is not available")
    session = Session.objects.create(
        agent=agent,
        harness_id=agent.harness_id,
        title=title,
        initial_prompt=initial_prompt,
        env_vars=crypto.encrypt_map(env_plain),
        created_by=user if user is not None and user.pk else None,
    )
    session_id = str(session.id)
    transaction.on_commit(lambda: async_task("sandboxes.tasks.session_bring_up", session_id))
    return session


def _harness_env(session: Session, stubs: Mapping[str, str]) -> dict[str, str]:
    """The environment the harness starts with: settings and stubs, never a secret value."""
    agent = session.agent
    harness = harness_get(session.harness_id)
    env = {"LAP_SESSION_ID": str(session.id), "LAP_AGENT_ID": str(agent.id)}
    optional = {
        "AGENT_PROMPT": agent.prompt,
        "REPO_URL": agent.repo_url,
        "BRANCH": agent.branch if agent.repo_url else "",
        "LITELLM_DEFAULT_MODEL": agent.model,
    }
    env.update({name: value for name, value in optional.items() if value})
    if harness is not None and harness.needs_llm and settings.LITELLM_API_BASE:
        env["LITELLM_API_BASE"] = settings.LITELLM_API_BASE
    if harness is not None and not harness.supports_tui:
        env["PORT"] = API_HARNESS_PORT
    env.update(stubs)
    return env


def _set_phase(session: Session, phase: str, detail: str = "") -> bool:
    return session.transition(expected=(Session.Status.CREATING,), phase=phase, phase_detail=detail)


def session_bring_up(session_id: str | uuid.UUID) -> None:
    """Create the sandbox, start the harness and mark the session ready.

    Safe to run twice: only the call that moves the session out of its initial
    phase proceeds. A ``DriverError`` fails the session with a readable reason.
    If the session is stopped or deleted meanwhile, the sandbox is destroyed.
    """
    session = Session.objects.select_related("agent").filter(pk=session_id).first()
    if session is None:
        return
    claimed = Session.objects.filter(
        pk=session.pk, status=Session.Status.CREATING, phase=""
    ).update(phase=Session.Phase.CREATING_SANDBOX, phase_detail="")
    if not claimed:
        return
    session.phase = Session.Phase.CREATING_SANDBOX
    harness = harness_get(session.harness_id)
    if harness is None:
        session_fail(session, f"unknown harness {session.harness_id!r}")
        return
    driver = get_driver()
    token = secrets.token_urlsafe(32)
    labels = {
        LABEL_SESSION: str(session.id),
        LABEL_AGENT: str(session.agent_id),
    }
    # The row exists before the driver is asked, so stop and reconcile can find it.
    sandbox = Sandbox.objects.create(
        session=session, driver=driver.name, runner_token=crypto.encrypt(token), labels=labels
    )
    labels[LABEL_SANDBOX] = str(sandbox.id)
    Sandbox.objects.filter(pk=sandbox.pk).update(labels=labels)
    stubs, material = vault_prepare(sandbox=sandbox, agent=session.agent, session=session)
    spec = SandboxSpec(
        sandbox_id=str(sandbox.id),
        harness=harness.id,
        runner_token=token,
        labels=labels,
        egress=EgressPolicy(
            allow_out=tuple(session.agent.allow_out), deny_out=tuple(session.agent.deny_out)
        ),
        vault_material=material,
    )
    try:
        handle = driver.create(spec)
        sandbox.ref = handle.ref
        Sandbox.objects.filter(pk=sandbox.pk).update(ref=handle.ref)
        _set_phase(session, Session.Phase.STARTING_VAULT)
        driver.wait_ready(handle, timeout=float(settings.LAP_CREATING_TIMEOUT))
        endpoints = driver.endpoints(handle)
        sandbox.runner_url = endpoints.runner_url
        vault_set_control_url(sandbox, endpoints.vault_url)
        Sandbox.objects.filter(pk=sandbox.pk).update(
            runner_url=endpoints.runner_url, state=Sandbox.State.RUNNING
        )
        if not _set_phase(session, Session.Phase.PUSHING_SECRETS):
            _sandbox_destroy(driver, sandbox)
            return
        vault_push(sandbox)
        if not _set_phase(session, Session.Phase.STARTING_HARNESS, " ".join(harness.argv)):
            _sandbox_destroy(driver, sandbox)
            return
        cols, rows = TERMINAL_SIZE
        env = {**driver.sandbox_env(), **_harness_env(session, stubs)}
        client = runner_client(endpoints.runner_url, token)
        try:
            client.start(argv=list(harness.argv), env=env, cwd=RUNNER_CWD, cols=cols, rows=rows)
        finally:
            client.close()
    except DriverError as error:
        session_fail(session, str(error) or type(error).__name__)
        return
    except RunnerError as error:
        session_fail(session, f"starting the harness failed: {error}")
        return
    except LapError as error:  # from vault_push: the sidecar is unreachable or refused
        session_fail(session, f"pushing secrets to the vault failed: {error.message}")
        return
    ready = session.transition(
        expected=(Session.Status.CREATING,),
        status=Session.Status.READY,
        phase=Session.Phase.READY,
        phase_detail="",
        last_seen_at=timezone.now(),
    )
    if not ready:  # stopped, failed or deleted while we worked
        _sandbox_destroy(driver, sandbox)


# --- ending --------------------------------------------------------------------------


def _sandbox_destroy(driver: SandboxDriver, sandbox: Sandbox) -> bool:
    """Destroy one sandbox; on a driver error leave the row for reconcile to retry."""
    handle = SandboxHandle(sandbox_id=str(sandbox.id), driver=sandbox.driver, ref=sandbox.ref)
    if sandbox.state == Sandbox.State.RUNNING:
        recording_keep(sandbox)
    try:
        driver.destroy(handle)
    except DriverError as error:
        logger.warning("destroying sandbox %s failed, reconcile retries: %s", sandbox.id, error)
        return False
    Sandbox.objects.filter(pk=sandbox.pk).update(
        state=Sandbox.State.DESTROYED, destroyed_at=timezone.now()
    )
    return True


def _destroy_sandboxes(session: Session) -> None:
    leftovers = list(Sandbox.objects.filter(session=session).exclude(state=Sandbox.State.DESTROYED))
    if leftovers:
        driver = get_driver()
        for sandbox in leftovers:
            _sandbox_destroy(driver, sandbox)


def session_fail(session: Session, reason: str) -> bool:
    """Fail a creating session with ``reason`` and destroy its sandbox.

    Returns whether this call failed it (False if it had already left ``creating``).
    """
    failed = session.transition(
        expected=(Session.Status.CREATING,),
        status=Session.Status.FAILED,
        failure_reason=reason[:2000],
        stopped_at=timezone.now(),
    )
    _destroy_sandboxes(session)
    return failed


def session_stop(session: Session, *, reason: str = "") -> bool:
    """Stop a session: mark it dead and destroy its sandbox. Idempotent.

    Returns whether this call stopped it; a session already dead or failed only
    gets any leftover sandbox destroyed. ``reason`` (e.g. "idle timeout") is
    recorded as the failure reason.
    """
    changes: dict[str, object] = {"status": Session.Status.DEAD, "stopped_at": timezone.now()}
    if reason:
        changes["failure_reason"] = reason
    stopped = session.transition(expected=LIVE, **changes)
    _destroy_sandboxes(session)
    return stopped


def session_stop_all_for_agent(agent: Agent) -> int:
    """Stop every live session of ``agent`` (and destroy leftover sandboxes); returns how many."""
    leftover = Q(sandboxes__state__in=[Sandbox.State.CREATING, Sandbox.State.RUNNING])
    sessions = agent.sessions.filter(Q(status__in=LIVE) | leftover).distinct()
    return sum(session_stop(session) for session in sessions)


def session_touch(session_id: str | uuid.UUID) -> None:
    """Record activity on a ready session (keeps it from being reaped as idle)."""
    now = timezone.now()
    Session.objects.filter(pk=session_id, status=Session.Status.READY).filter(
        Q(last_seen_at__isnull=True) | Q(last_seen_at__lt=now - TOUCH_INTERVAL)
    ).update(last_seen_at=now)


# --- terminal tokens -----------------------------------------------------------------


def tty_token_mint(session: Session) -> str:
    """A signed token that opens this session's terminal until ``LAP_TTY_TOKEN_TTL`` passes."""
    return signing.TimestampSigner(salt=TTY_SALT).sign(str(session.id))


def tty_token_check(token: str, session_id: str | uuid.UUID) -> bool:
    """Whether ``token`` was minted for ``session_id`` and has not expired."""
    try:
        value = signing.TimestampSigner(salt=TTY_SALT).unsign(
            token, max_age=settings.LAP_TTY_TOKEN_TTL
        )
    except signing.BadSignature:
        return False
    return hmac.compare_digest(value.encode(), str(session_id).encode())


# --- messages ------------------------------------------------------------------------


def session_message_append(
    session: Session,
    *,
    role: str,
    parts: list[dict],
    status: str = SessionMessage.Status.PENDING,
) -> SessionMessage:
    """Append a message with the next ``seq``; concurrent appends retry on a clash."""
    for _ in range(5):
        last = SessionMessage.objects.filter(session=session).aggregate(last=Max("seq"))["last"]
        try:
            with transaction.atomic():
                return SessionMessage.objects.create(
                    session=session,
                    seq=0 if last is None else last + 1,
                    role=role,
                    status=status,
                    parts=parts,
                    completed_at=None
                    if status == SessionMessage.Status.PENDING
                    else timezone.now(),
                )
        except IntegrityError:
            continue
    raise Conflict("could not append the message, try again")


def session_message_finish(
    message: SessionMessage, *, status: str, parts: list[dict] | None = None
) -> bool:
    """Complete (or fail) a pending message once; a finished message is never rewritten."""
    if status == SessionMessage.Status.PENDING:
        raise ValueError("finish needs a final status")
    changes: dict[str, object] = {"status": status, "completed_at": timezone.now()}
    if parts is not None:
        changes["parts"] = parts
    won = (
        SessionMessage.objects.filter(pk=message.pk, status=SessionMessage.Status.PENDING).update(
            **changes
        )
        == 1
    )
    if won:
        for field, value in changes.items():
            setattr(message, field, value)
    return won


# --- reconcile -----------------------------------------------------------------------


def _is_pool_owned(info: SandboxInfo, row: Sandbox | None) -> bool:
    return bool(info.labels.get(LABEL_POOL_HARNESS)) and (row is None or row.session_id is None)


def _reconcile_with_driver(driver: SandboxDriver, ready_ids: list[uuid.UUID]) -> Counter[str]:
    counts: Counter[str] = Counter()
    infos = {
        info.labels.get(LABEL_SANDBOX) or info.handle.sandbox_id: info for info in driver.list()
    }
    for session in Session.objects.filter(pk__in=ready_ids, status=Session.Status.READY):
        sandbox = _live_sandbox(session)
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
        row = rows.get(sandbox_id)
        if (row is not None and row.session is not None and row.session.is_live) or _is_pool_owned(
            info, row
        ):
            continue
        if row is not None:
            if _sandbox_destroy(driver, row):
                counts["orphans"] += 1
            continue
        try:
            driver.destroy(info.handle)
            counts["orphans"] += 1
        except DriverError as error:
            logger.warning("destroying orphan sandbox %s failed: %s", sandbox_id, error)
    # Rows of ended sessions whose sandbox the driver no longer knows: already gone.
    ended = Q(session__isnull=False) & ~Q(session__status__in=LIVE)
    detached = Q(session__isnull=True) & ~Q(labels__has_key=LABEL_POOL_HARNESS)
    Sandbox.objects.exclude(state=Sandbox.State.DESTROYED).exclude(pk__in=listed).filter(
        ended | detached
    ).update(state=Sandbox.State.DESTROYED, destroyed_at=timezone.now())
    return counts


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def reconcile() -> dict[str, int]:
    """Bring the database and the driver's sandboxes into agreement. Level-triggered.

    Fails sessions stuck in ``creating`` past ``LAP_CREATING_TIMEOUT``, reaps
    ready sessions idle past ``LAP_IDLE_TIMEOUT``, marks ready sessions whose
    sandbox vanished or exited as dead (with the driver's reason) and destroys
    sandboxes that belong to no live session. Returns counts of what it did.
    """
    now = timezone.now()
    counts: Counter[str] = Counter()
    creating_cutoff = now - timedelta(seconds=settings.LAP_CREATING_TIMEOUT)
    for session in Session.objects.filter(
        status=Session.Status.CREATING, created_at__lt=creating_cutoff
    ):
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
    try:
        counts.update(_reconcile_with_driver(get_driver(), ready_ids))
    except DriverError as error:
        logger.warning("reconcile: the driver cannot list sandboxes: %s", error)
        counts["driver_errors"] += 1
    return dict(counts)


# --- health and schedules ------------------------------------------------------------


def driver_check() -> str | None:
    """None when the configured driver answers, else why not (for /healthz)."""
    try:
        get_driver().list()
    # A health probe reports any failure (import error, bad config, driver bug) rather than crash.
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def ensure_schedules() -> None:
    """Create or update the periodic django-q2 schedules. Idempotent; run at start-up."""
    for name, func, minutes in SCHEDULES:
        schedule = Schedule.objects.filter(name=name).first() or Schedule(name=name)
        schedule.func = func
        schedule.schedule_type = Schedule.MINUTES
        schedule.minutes = minutes
        schedule.repeats = -1
        schedule.save()
