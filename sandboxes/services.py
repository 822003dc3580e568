"""Session lifecycle: the only code that creates, changes or stops sessions and sandboxes
(``sandboxes.reconcile`` acts through the functions here; a session's messages are
``sandboxes.messages``).

Every status change is a compare-and-set (``Session.transition``), so the
operations here may race each other (a stop during bring-up, reconcile during
a stop) without resurrecting a session that another caller ended.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core import signing
from django.db import transaction
from django.db.models import Count, OuterRef, Q, Subquery
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task
from prometheus_client import Counter as MetricCounter
from prometheus_client import Histogram

from agents.harnesses import HARNESSES, harness_get
from agents.models import Agent
from agents.validation import env_var_errors, first_error, label_errors
from lapsite.errors import Conflict, LapError, NotFound
from sandboxes.drivers.base import (
    LABEL_AGENT,
    LABEL_POOL_HARNESS,
    LABEL_SANDBOX,
    LABEL_SESSION,
    DriverError,
    EgressPolicy,
    Endpoints,
    SandboxDriver,
    SandboxHandle,
    SandboxSpec,
)
from sandboxes.harness_setup import HarnessContext, harness_setup
from sandboxes.limits import MESSAGE_MAX_BYTES, require_at_most
from sandboxes.messages import session_history, session_message_fail
from sandboxes.models import Sandbox, Session, SessionMessage
from sandboxes.recordings import recording_keep
from sandboxes.registry import get_driver, runner_client
from sandboxes.runner_client import RunnerError
from sandboxes.sandbox_prepare import (
    HarnessSetupFailed,
    redact_url,
    repo_clone,
    sandbox_prepare,
)
from vault import crypto
from vault.services import (
    vault_check,
    vault_material_mint,
    vault_prepare,
    vault_push,
    vault_set_control_url,
    vault_stubs_mint,
)

logger = logging.getLogger(__name__)

LIVE = Session.LIVE
TTY_SALT = "lap.tty"
RUNNER_CWD = "/work"
REPO_DIR = "/work/repo"
TERMINAL_SIZE = (120, 40)  # cols, rows until the first client resizes
API_HARNESS_PORT = "4096"
# Terminal keystrokes touch the session constantly; one write per interval is enough.
TOUCH_INTERVAL = timedelta(seconds=15)
POOL_CANDIDATES = 8  # warm rows read per claim round; a lost race moves to the next
# A session's initial prompt runs as a task: as long as a turn may (conversation.TURN_TIMEOUT).
FIRST_TURN_TIMEOUT = 30 * 60 + 60
# What a bring-up run inline (a warm claim; the task queue in tests) may have changed on the
# session, read back before answering: a session that failed at once comes with its reason.
BRING_UP_FIELDS = (
    "status",
    "phase",
    "phase_detail",
    "failure_reason",
    "stopped_at",
    "last_seen_at",
)
# Recorded where claims run: in the API request (daphne, the process /metrics serves).
POOL_CLAIMS = MetricCounter(
    "lap_pool_claims",
    "Warm-pool claim attempts by outcome (hit, miss, broken)",
    ["harness", "outcome"],
)
POOL_CLAIM_SECONDS = Histogram(
    "lap_pool_claim_seconds",
    "Time from claiming a warm sandbox to the session being ready",
    ["harness"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SCHEDULES = (
    # (name, dotted task path, every N minutes)
    ("lap.sandboxes.reconcile", "sandboxes.tasks.sandbox_reconcile", 1),
)


class SessionInvalid(LapError):
    code = "invalid"
    default_message = "invalid session request"


# --- reading -------------------------------------------------------------------------


def session_get(session_id: str | uuid.UUID, *, viewer: AbstractBaseUser | None) -> Session:
    """The session with this id, if ``viewer`` may see it (``SessionQuerySet.visible_to``;
    None: no user to restrict to, the caller checked a session-bound credential);
    ``NotFound`` for unknown, other users' or malformed ids."""
    try:
        pk = uuid.UUID(str(session_id))
    except ValueError:
        raise NotFound(f"session '{session_id}' not found") from None
    sessions = Session.objects if viewer is None else Session.objects.visible_to(viewer)
    session = sessions.select_related("agent").filter(pk=pk).first()
    if session is None:
        raise NotFound(f"session '{session_id}' not found")
    return session


def session_list(
    *,
    viewer: AbstractBaseUser,
    agent_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Session]:
    """The sessions ``viewer`` may see, newest first, ``limit`` from ``offset``; ``agent_id``
    is an agent's id or name."""
    sessions = Session.objects.visible_to(viewer).select_related("agent")
    if agent_id:
        try:
            sessions = sessions.filter(agent_id=uuid.UUID(agent_id))
        except ValueError:
            sessions = sessions.filter(agent__name=agent_id)
    if status:
        sessions = sessions.filter(status=status)
    return list(sessions[offset : offset + limit])


def session_counts_by_status() -> dict[str, int]:
    counts = dict.fromkeys(Session.Status.values, 0)
    for row in Session.objects.values("status").annotate(n=Count("id")):
        counts[row["status"]] = row["n"]
    return counts


def session_stats_by_agent(agent_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, tuple[int, str]]:
    """Agent id → (how many sessions it has had, the status of its newest one or "")."""
    newest = Session.objects.filter(agent_id=OuterRef("pk")).order_by("-created_at", "-id")
    rows = (
        Agent.objects.filter(pk__in=list(agent_ids))
        .annotate(n=Count("sessions"), latest=Subquery(newest.values("status")[:1]))
        .values_list("pk", "n", "latest")
    )
    return {pk: (n, latest or "") for pk, n, latest in rows}


def session_runner(session: Session) -> tuple[str, str]:
    """``(runner_url, runner_token)`` of a ready session's sandbox; ``Conflict`` otherwise."""
    sandbox = live_sandbox(session) if session.status == Session.Status.READY else None
    if sandbox is None or not sandbox.runner_url:
        raise Conflict("session is not ready", code="not_ready")
    return sandbox.runner_url, crypto.decrypt(sandbox.runner_token)


def live_sandbox(session: Session) -> Sandbox | None:
    """The session's running sandbox (the newest, after a restart), if any."""
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
    """Record a new session in ``creating`` and start its bring-up after commit.

    After commit, ``session_start`` claims a warm sandbox at once or enqueues a cold
    bring-up; the caller polls the session. Raises ``SessionInvalid`` for
    bad ``env_vars``, a title with control characters or an ``initial_prompt`` for a
    terminal harness (nothing would read it), ``TooLarge`` for an
    ``initial_prompt`` over ``MESSAGE_MAX_BYTES`` (it is sent as a message), and ``Conflict``
    when the agent's harness is unknown.
    """
    env_plain = dict(env_vars or {})
    errors = env_var_errors(env_plain) | label_errors("title", title)
    if errors:
        raise SessionInvalid(first_error(errors))
    require_at_most("initial_prompt", [initial_prompt], MESSAGE_MAX_BYTES)
    harness = harness_get(agent.harness_id)
    if harness is None:
        raise Conflict(f"agent's harness {agent.harness_id!r} is not available")
    if initial_prompt and harness.supports_tui:
        api_harnesses = ", ".join(h.id for h in HARNESSES.values() if not h.supports_tui)
        raise SessionInvalid(
            f"initial_prompt: the {harness.id} harness is a terminal, which takes no first"
            f" message; type it after attaching, or use an API harness ({api_harnesses})"
        )
    session = Session.objects.create(
        agent=agent,
        harness_id=agent.harness_id,
        title=title,
        initial_prompt=initial_prompt,
        env_vars=crypto.encrypt_map(env_plain),
        created_by=user if user is not None and user.pk else None,
    )
    session_id = session.id
    transaction.on_commit(lambda: session_start(session_id))
    # Outside a transaction the claim has just run: answer with what it did.
    session.refresh_from_db(fields=BRING_UP_FIELDS)
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


def _sandbox_row(driver: SandboxDriver, labels: dict[str, str], **fields: object) -> Sandbox:
    """A new sandbox row (labelled with its own id) before the driver is asked, so stop,
    reconcile and pool maintenance can find it whatever happens next; ``runner_token`` is
    the row's plaintext token, on the instance only."""
    token = secrets.token_urlsafe(32)
    sandbox = Sandbox.objects.create(
        driver=driver.name, runner_token=crypto.encrypt(token), labels=labels, **fields
    )
    sandbox.labels = {**labels, LABEL_SANDBOX: str(sandbox.id)}
    Sandbox.objects.filter(pk=sandbox.pk).update(labels=sandbox.labels)
    sandbox.runner_token = token
    return sandbox


def _sandbox_boot(
    driver: SandboxDriver,
    sandbox: Sandbox,
    *,
    material: dict[str, bytes],
    egress: EgressPolicy,
    on_created: Callable[[], object] = lambda: None,
) -> Endpoints:
    """The provisioning half shared by cold bring-up and the warm pool.

    Creates the sandbox (runner + vault sidecar with its key material), waits until both
    answer and records where they listen; the row ends ``running``. Raises ``DriverError``.
    ``sandbox.runner_token`` must be the plaintext token (as ``_sandbox_row`` leaves it).
    """
    spec = SandboxSpec(
        sandbox_id=str(sandbox.id),
        harness=sandbox.harness_id,
        runner_token=sandbox.runner_token,
        labels=sandbox.labels,
        egress=egress,
        vault_material=material,
    )
    handle = driver.create(spec)
    sandbox.ref = handle.ref
    Sandbox.objects.filter(pk=sandbox.pk).update(ref=handle.ref)
    on_created()
    driver.wait_ready(handle, timeout=float(settings.LAP_CREATING_TIMEOUT))
    endpoints = driver.endpoints(handle)
    sandbox.runner_url = endpoints.runner_url
    sandbox.state = Sandbox.State.RUNNING
    vault_set_control_url(sandbox, endpoints.vault_url)
    Sandbox.objects.filter(pk=sandbox.pk).update(
        runner_url=endpoints.runner_url, state=Sandbox.State.RUNNING
    )
    return endpoints


def _harness_start(driver: SandboxDriver, sandbox: Sandbox, session: Session, stubs: dict) -> bool:
    """Make the sandbox ready for the session's harness and start it under the runner.

    Phase ``cloning_repo`` when the agent has a repository (the harness's files and the git
    credential helper first, then the clone through the vault), then ``starting_harness``
    (the files and the tools check when there was no clone, then ``/start`` with the stub
    env, in the clone when there is one). False when the session left ``creating``
    meanwhile; raises ``RunnerError`` and ``HarnessSetupFailed``.
    """
    harness = harness_get(session.harness_id)
    assert harness is not None  # checked by the callers
    agent = session.agent
    cols, rows = TERMINAL_SIZE
    env = {**driver.sandbox_env(), **_harness_env(session, stubs)}
    workdir = REPO_DIR if agent.repo_url else RUNNER_CWD
    context = HarnessContext(harness, agent.model, agent.prompt, workdir, env)
    setup = harness_setup(context)
    env.update(setup.env)
    client = runner_client(sandbox.runner_url, crypto.decrypt(sandbox.runner_token))
    try:
        if agent.repo_url:
            if not _set_phase(session, Session.Phase.CLONING_REPO, redact_url(agent.repo_url)):
                return False
            sandbox_prepare(client, harness=harness, env=env, files=setup.files)
            repo_clone(client, env=env, url=agent.repo_url, branch=agent.branch)
        if not _set_phase(session, Session.Phase.STARTING_HARNESS, " ".join(harness.argv)):
            return False
        if not agent.repo_url and (harness.requires or setup.files):
            sandbox_prepare(client, harness=harness, env=env, files=setup.files)
        api: dict = {}
        if not harness.supports_tui:  # turn by turn; after a restart, with the conversation
            api = {"api": harness.id, "history": session_history(session)}
        client.start(argv=list(harness.argv), env=env, cwd=workdir, cols=cols, rows=rows, **api)
    finally:
        client.close()
    return True


def _mark_ready(driver: SandboxDriver, session: Session, sandbox: Sandbox) -> bool:
    ready = session.transition(
        expected=(Session.Status.CREATING,),
        status=Session.Status.READY,
        phase=Session.Phase.READY,
        phase_detail="",
        last_seen_at=timezone.now(),
    )
    if not ready:  # stopped, failed or deleted while we worked
        sandbox_destroy(driver, sandbox)
    elif session.initial_prompt and not session.supports_tui:
        session_id = str(session.id)
        transaction.on_commit(
            lambda: async_task(
                "sandboxes.tasks.session_first_turn", session_id, timeout=FIRST_TURN_TIMEOUT
            )
        )
    return ready


def session_start(session_id: str | uuid.UUID) -> None:
    """Bring a new session up: claim a warm sandbox now, else enqueue a cold bring-up.

    Runs in the process that created the session (after commit; in the API request).
    A warm claim is a few database writes, a push to a sidecar that is already up and the
    runner's ``/start``: milliseconds. Doing it here rather than in a django-q2 task
    saves the queue pick-up (the ORM broker polls every 50 ms, a worker may be busy with a
    slow cold bring-up), which would otherwise dominate a warm start; the cold path (a new
    sandbox, a second or more) still runs in a task.
    """
    session = Session.objects.select_related("agent").filter(pk=session_id).first()
    if session is None or session_claim_warm(session):
        return
    async_task("sandboxes.tasks.session_bring_up", str(session_id))


def _pool_take(session: Session) -> Sandbox | None:
    """Claim one warm sandbox of the session's harness for it; None when none is left.

    Compare-and-set: ``UPDATE … WHERE id = ? AND pool_state = 'warm'`` on each candidate,
    oldest first, moving on to the next when another claimer won (Postgres re-checks the
    condition after the row lock; SQLite serialises writers), so two sessions never get the
    same sandbox on either database, without holding locks across the claim.
    """
    while True:
        candidates = list(
            Sandbox.objects.filter(
                pool_state=Sandbox.PoolState.WARM,
                harness_id=session.harness_id,
                session__isnull=True,
                state=Sandbox.State.RUNNING,
            ).order_by("created_at")[:POOL_CANDIDATES]
        )
        if not candidates:
            return None
        for sandbox in candidates:
            sandbox.labels = {
                **sandbox.labels,
                LABEL_SESSION: str(session.id),
                LABEL_AGENT: str(session.agent_id),
            }
            sandbox.pool_state = Sandbox.PoolState.CLAIMED
            sandbox.session = session
            sandbox.claimed_at = timezone.now()
            won = Sandbox.objects.filter(pk=sandbox.pk, pool_state=Sandbox.PoolState.WARM).update(
                pool_state=sandbox.pool_state,
                session=session,
                claimed_at=sandbox.claimed_at,
                labels=sandbox.labels,
            )
            if won:
                return sandbox


def session_claim_warm(session: Session) -> bool:
    """Bring ``session`` up on a warm sandbox; False if it needs a cold start instead.

    Phase ``claiming_warm``: bind a warm sandbox (``_pool_take``), mint the stubs, push the
    sealed bundle, ``/start`` the harness with the stub env, ``ready``; then enqueue a pool
    top-up. When the push or ``/start`` fails, the claimed sandbox is destroyed (``broken``)
    and the session goes back to the start of bring-up, for a cold start; a broken warm
    sandbox never fails a session. True also when the session was stopped meanwhile.
    """
    started = time.perf_counter()
    if not Session.objects.filter(pk=session.pk, status=Session.Status.CREATING, phase="").update(
        phase=Session.Phase.CLAIMING_WARM, phase_detail=""
    ):
        return True  # another bring-up has it, or it ended
    session.phase = Session.Phase.CLAIMING_WARM
    sandbox = _pool_take(session)
    if sandbox is None:
        POOL_CLAIMS.labels(session.harness_id, "miss").inc()
        session.transition(expected=(Session.Status.CREATING,), phase="")
        return False
    try:
        return _claim_bring_up(session, sandbox, started)
    finally:
        # Replace the claimed sandbox. After the claim, not before: outside a transaction
        # django-q2's ORM broker closes this thread's database connection on enqueue.
        transaction.on_commit(lambda: async_task("pool.tasks.pool_top_up"))


def _claim_bring_up(session: Session, sandbox: Sandbox, started: float) -> bool:
    """The rest of ``session_claim_warm`` once ``sandbox`` is bound to ``session``."""
    driver = get_driver()
    try:
        stubs = vault_stubs_mint(sandbox=sandbox, agent=session.agent, session=session)
        if not _set_phase(session, Session.Phase.PUSHING_SECRETS):
            sandbox_destroy(driver, sandbox)
            return True
        # One attempt: a warm sidecar that does not answer is broken, and a cold start
        # is quicker than the push's back-off.
        vault_push(sandbox, attempts=1)
        if not _harness_start(driver, sandbox, session, stubs):
            sandbox_destroy(driver, sandbox)
            return True
    except HarnessSetupFailed as error:  # the session's own set-up, not a broken sandbox
        session_fail(session, error.message)
        return True
    except (LapError, RunnerError, DriverError) as error:
        reason = error.message if isinstance(error, LapError) else str(error)
        logger.warning(
            "warm sandbox %s failed its claim by session %s, starting cold: %s",
            sandbox.id,
            session.id,
            reason,
        )
        POOL_CLAIMS.labels(session.harness_id, "broken").inc()
        Sandbox.objects.filter(pk=sandbox.pk).update(
            pool_state=Sandbox.PoolState.BROKEN, session=None, failure_reason=reason[:2000]
        )
        sandbox_destroy(driver, sandbox)
        return not session.transition(expected=(Session.Status.CREATING,), phase="")
    if _mark_ready(driver, session, sandbox):
        POOL_CLAIMS.labels(session.harness_id, "hit").inc()
        POOL_CLAIM_SECONDS.labels(session.harness_id).observe(time.perf_counter() - started)
    return True


def session_bring_up(session_id: str | uuid.UUID) -> None:
    """Create a sandbox for the session (cold), start the harness and mark it ready.

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
    labels = {LABEL_SESSION: str(session.id), LABEL_AGENT: str(session.agent_id)}
    sandbox = _sandbox_row(driver, labels, session=session, harness_id=harness.id)
    stubs, material = vault_prepare(sandbox=sandbox, agent=session.agent, session=session)
    egress = EgressPolicy(
        allow_out=tuple(session.agent.allow_out), deny_out=tuple(session.agent.deny_out)
    )
    try:
        _sandbox_boot(
            driver,
            sandbox,
            material=material,
            egress=egress,
            on_created=lambda: _set_phase(session, Session.Phase.STARTING_VAULT),
        )
        sandbox.runner_token = crypto.encrypt(sandbox.runner_token)
        if not _set_phase(session, Session.Phase.PUSHING_SECRETS):
            sandbox_destroy(driver, sandbox)
            return
        vault_push(sandbox)
        if not _harness_start(driver, sandbox, session, stubs):
            sandbox_destroy(driver, sandbox)
            return
    except DriverError as error:
        session_fail(session, str(error) or type(error).__name__)
        return
    except RunnerError as error:
        session_fail(session, f"starting the harness failed: {error}")
        return
    except HarnessSetupFailed as error:
        session_fail(session, error.message)
        return
    except LapError as error:  # from vault_push: the sidecar is unreachable or refused
        session_fail(session, f"pushing secrets to the vault failed: {error.message}")
        return
    _mark_ready(driver, session, sandbox)


# --- the warm pool's sandboxes (policy in pool.services) -----------------------------


def pool_sandbox_reserve(harness_id: str) -> Sandbox:
    """A ``provisioning`` row for a new warm sandbox of ``harness_id``; nothing started yet."""
    labels = {LABEL_POOL_HARNESS: harness_id}
    sandbox = _sandbox_row(
        get_driver(), labels, harness_id=harness_id, pool_state=Sandbox.PoolState.PROVISIONING
    )
    sandbox.runner_token = crypto.encrypt(sandbox.runner_token)
    Sandbox.objects.filter(pk=sandbox.pk).update(runner_token=sandbox.runner_token)
    return sandbox


def pool_sandbox_provision(sandbox_id: str | uuid.UUID) -> bool:
    """Boot a reserved warm sandbox: runner and vault up, no stub, no secret, no harness.

    Returns whether it became ``warm``. A driver failure destroys it and marks it
    ``failed`` (a provision failure); a row no longer ``provisioning`` is left alone.
    """
    sandbox = Sandbox.objects.filter(
        pk=sandbox_id, pool_state=Sandbox.PoolState.PROVISIONING, state=Sandbox.State.CREATING
    ).first()
    if sandbox is None or sandbox.ref:
        return False
    driver = get_driver()
    sandbox.runner_token = crypto.decrypt(sandbox.runner_token)
    try:
        material = vault_material_mint(sandbox)
        _sandbox_boot(driver, sandbox, material=material, egress=EgressPolicy())
    except DriverError as error:
        reason = str(error) or type(error).__name__
        logger.warning("provisioning warm sandbox %s failed: %s", sandbox.id, reason)
        pool_sandbox_retire(sandbox, Sandbox.PoolState.FAILED, reason)
        return False
    warm = Sandbox.objects.filter(pk=sandbox.pk, pool_state=Sandbox.PoolState.PROVISIONING).update(
        pool_state=Sandbox.PoolState.WARM, ready_at=timezone.now()
    )
    return warm == 1


def pool_sandbox_retire(sandbox: Sandbox, pool_state: str, reason: str = "") -> bool:
    """Take an unclaimed pool sandbox out of the pool (``pool_state``) and destroy it.

    Compare-and-set against a claim: returns False (and touches nothing) if a session
    claimed it first.
    """
    taken = Sandbox.objects.filter(
        pk=sandbox.pk,
        pool_state__in=(Sandbox.PoolState.PROVISIONING, Sandbox.PoolState.WARM),
        session__isnull=True,
    ).update(pool_state=pool_state, failure_reason=reason[:2000])
    if not taken:
        return False
    sandbox.pool_state = pool_state
    sandbox_destroy(get_driver(), sandbox)
    return True


def pool_sandbox_check(sandbox: Sandbox) -> str | None:
    """None when a warm sandbox's runner and vault both answer, else why not."""
    try:
        client = runner_client(sandbox.runner_url, crypto.decrypt(sandbox.runner_token))
        try:
            health = client.health()
        finally:
            client.close()
    except RunnerError as error:
        return f"runner: {error}"
    if not health.get("ok") or health.get("started"):
        return f"runner: unexpected health {health!r}"
    return vault_check(sandbox)


# --- ending --------------------------------------------------------------------------


def sandbox_destroy(driver: SandboxDriver, sandbox: Sandbox) -> bool:
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
            sandbox_destroy(driver, sandbox)


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


# Sessions a stop still has work for: live ones, and ended ones whose sandbox is still up.
_TO_STOP = Q(status__in=LIVE) | Q(
    sandboxes__state__in=[Sandbox.State.CREATING, Sandbox.State.RUNNING]
)


def session_stop_all_for_agent(agent: Agent) -> int:
    """Stop every live session of ``agent`` (and destroy leftover sandboxes); returns how many."""
    sessions = agent.sessions.filter(_TO_STOP).distinct()
    return sum(session_stop(session) for session in sessions)


def platform_down() -> dict[str, int]:
    """Stop every live session and destroy every sandbox the driver runs, warm ones included.

    Stopping the platform leaves sandboxes running on purpose (sessions survive a restart);
    this is the way to leave nothing behind. Run it with the platform stopped: a running
    worker would refill the warm pool. Returns what it stopped, retired and destroyed.
    """
    counts: Counter[str] = Counter(sessions=0, warm=0, other=0)
    sessions = Session.objects.filter(_TO_STOP).distinct()
    counts["sessions"] = sum(session_stop(s, reason="the platform was shut down") for s in sessions)
    warm = Sandbox.objects.filter(
        session__isnull=True,
        pool_state__in=[Sandbox.PoolState.PROVISIONING, Sandbox.PoolState.WARM],
    )
    for sandbox in warm:
        counts["warm"] += pool_sandbox_retire(sandbox, Sandbox.PoolState.RETIRED, "shut down")
    driver = get_driver()
    for info in driver.list():
        driver.destroy(info.handle)
        counts["other"] += 1
    return dict(counts)


def session_restart(session: Session) -> Session:
    """Give the session a new sandbox, keeping its conversation; returns it ``creating`` (or
    as a bring-up that ran at once left it: ``ready``, or ``failed`` with its reason).

    The old sandbox is destroyed (its files and processes are gone); the bring-up then runs
    as for a new session, and an API harness gets the conversation so far as ``history``.
    A ready, dead or failed session may be restarted; ``Conflict`` while it is creating. A
    turn in flight ends with an error, and its user message is failed.
    """
    if not session.transition(
        expected=(Session.Status.READY, Session.Status.DEAD, Session.Status.FAILED),
        status=Session.Status.CREATING,
        phase="",
        phase_detail="",
        failure_reason="",
        stopped_at=None,
        restarted_at=timezone.now(),
        turn_started_at=None,
    ):
        raise Conflict("the session is still being brought up", code="not_ready")
    for message in session.messages.filter(status=SessionMessage.Status.PENDING):
        session_message_fail(message, "the session was restarted")
    _destroy_sandboxes(session)
    session_id = session.id
    transaction.on_commit(lambda: session_start(session_id))
    session.refresh_from_db(fields=BRING_UP_FIELDS)
    return session


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


# --- health and schedules ------------------------------------------------------------


def driver_check() -> str | None:
    """None when the configured driver answers, else why not (for /healthz)."""
    try:
        get_driver().list()
    # A health probe reports any failure (import error, bad config, driver bug) rather than crash.
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def ensure_schedules(schedules: tuple[tuple[str, str, int], ...] = SCHEDULES) -> None:
    """Create or update periodic django-q2 schedules ``(name, task, minutes)``. Idempotent;
    run at start-up."""
    for name, func, minutes in schedules:
        schedule = Schedule.objects.filter(name=name).first() or Schedule(name=name)
        schedule.func = func
        schedule.schedule_type = Schedule.MINUTES
        schedule.minutes = minutes
        schedule.repeats = -1
        schedule.save()
