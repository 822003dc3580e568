"""Vault operations: stubs and key material for a sandbox, sealed bundles, pushes, records.

The real value of a secret leaves the database only inside a bundle sealed with the sandbox's
own key (Fernet), on its way to that sandbox's sidecar. Nothing here logs a value or a stub.

- ``vault_prepare`` (bring-up, before the sandbox exists) mints the sandbox's sealing key,
  intermediate CA and stubs, and returns the stub env and the driver's key material; a
  warm-pool sandbox gets ``vault_material_mint`` at provisioning and ``vault_stubs_mint``
  when a session claims it.
- ``vault_push`` seals the current bundle (a new, higher version each time) and PUTs it to the
  sidecar with bounded retries; ``vault_push_for_agent`` enqueues pushes to every live sandbox
  of an agent after its secrets changed, so rotation reaches running sandboxes.
- ``vault_records_pull`` stores the sidecar's interception records and turns a blocked
  credential into a ``SecurityEvent`` (the tripwire), stopping the session if the agent says so.
"""

from __future__ import annotations

import datetime
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django_q.tasks import async_task

from agents.models import Agent
from lapsite.errors import LapError, Unavailable
from sandboxes.models import Sandbox, Session
from vault import ca, crypto
from vault.models import (
    InterceptionRecord,
    PlatformCA,
    SandboxVault,
    SecurityEvent,
    VaultKey,
)
from vault.sidecar_client import SidecarUnreachable, read_token, sidecar_client

logger = logging.getLogger(__name__)

STUB_PREFIX = "lap_stub_"
LITELLM_KEY = "LITELLM_API_KEY"
PUSH_ATTEMPTS = 6
PUSH_FIRST_DELAY = 0.1  # seconds, doubling
PULL_PAGE = 1000
PULL_PAGES = 20
BLOCKED_REASON = "credential_not_allowed_for_host"
# Key material file names, as the sidecar's state dir and the driver expect them.
MATERIAL_KEY = "key.txt"
MATERIAL_CA = "ca.pem"
MATERIAL_TRUST = "ca-bundle.pem"


class VaultPushFailed(LapError):
    """The sidecar refused a bundle (it cannot be unsealed or names another sandbox)."""

    status = 502
    code = "vault_push_failed"
    default_message = "the vault sidecar refused the secrets bundle"


def stub_mint(name: str) -> str:
    """A fresh stub for ``name``: ``lap_stub_<name>_<128 random bits>``."""
    return f"{STUB_PREFIX}{name}_{secrets.token_hex(16)}"


def _litellm_host() -> str:
    return (urlsplit(settings.LITELLM_API_BASE).hostname or "") if settings.LITELLM_API_BASE else ""


def _secret_hosts(agent: Agent, name: str) -> list[str]:
    """Where a secret may go: its ``env_var_hosts``, else the agent's ``allow_out``.

    A secret bound to no host at all is never released (every use is blocked).
    """
    return list(agent.env_var_hosts.get(name) or agent.allow_out)


def _wanted_keys(agent: Agent, session: Session | None) -> dict[str, tuple[str, list[str]]]:
    """NAME → (source, allowed hosts) for every credential the sandbox's env carries."""
    wanted: dict[str, tuple[str, list[str]]] = {}
    if settings.LITELLM_API_KEY and _litellm_host():
        wanted[LITELLM_KEY] = (VaultKey.Source.PLATFORM, [_litellm_host()])
    for name in session.env_vars if session is not None else ():
        wanted[name] = (VaultKey.Source.SESSION, _secret_hosts(agent, name))
    for name in agent.env_vars:
        wanted[name] = (VaultKey.Source.AGENT, _secret_hosts(agent, name))
    return wanted


@transaction.atomic
def vault_prepare(
    *, sandbox: Sandbox, agent: Agent, session: Session | None
) -> tuple[dict[str, str], dict[str, bytes]]:
    """Mint a sandbox's vault: sealing key, intermediate CA and one stub per credential.

    Returns ``(stub env, key material)``: the env maps each credential name to its stub (the
    harness env gets these, never a value); the material is what the driver gives the sidecar
    (``key.txt``, ``ca.pem``) and the jail (``ca-bundle.pem``, the root plus the system CAs).
    Called once per sandbox; the stubs stay the same for the sandbox's life.
    """
    material = vault_material_mint(sandbox)
    return vault_stubs_mint(sandbox=sandbox, agent=agent, session=session), material


def vault_material_mint(sandbox: Sandbox) -> dict[str, bytes]:
    """The sandbox's sealing key and intermediate CA, as the driver's key material.

    A warm-pool sandbox gets only this at provisioning: it boots its sidecar with no secret
    and no stub, and ``vault_stubs_mint`` runs when a session claims it.
    """
    key = Fernet.generate_key()
    root = ca.root_get()
    intermediate = ca.intermediate_issue(root, str(sandbox.id))
    SandboxVault.objects.create(
        sandbox=sandbox,
        sealing_key=crypto.encrypt(key.decode()),
        ca_cert_pem=intermediate.cert_pem.decode(),
    )
    return {
        MATERIAL_KEY: key,
        MATERIAL_CA: intermediate.ca_pem,
        MATERIAL_TRUST: ca.trust_bundle(root.cert_pem),
    }


def vault_stubs_mint(*, sandbox: Sandbox, agent: Agent, session: Session | None) -> dict[str, str]:
    """One stub per credential of ``agent`` (and ``session``) for ``sandbox``: NAME → stub."""
    keys = [
        VaultKey(sandbox=sandbox, name=name, stub=stub_mint(name), source=source, allowed_hosts=h)
        for name, (source, h) in sorted(_wanted_keys(agent, session).items())
    ]
    VaultKey.objects.bulk_create(keys)
    return {k.name: k.stub for k in keys}


def vault_check(sandbox: Sandbox) -> str | None:
    """None when the sandbox's sidecar answers on its control endpoint, else why not."""
    vault = SandboxVault.objects.filter(sandbox=sandbox).first()
    if vault is None or not vault.control_url:
        return "the sandbox has no vault control endpoint"
    client = sidecar_client(vault.control_url)
    try:
        status, _ = client.interceptions(
            after=0, limit=1, read_token=read_token(_sealing_key(sandbox))
        )
    except SidecarUnreachable as error:
        return f"the vault sidecar is unreachable ({error})"
    finally:
        client.close()
    return None if status == 200 else f"the vault sidecar answered {status}"


def vault_set_control_url(sandbox: Sandbox, control_url: str | None) -> None:
    """Record where the sandbox's sidecar takes bundles (the driver's ``vault_url``)."""
    SandboxVault.objects.filter(sandbox=sandbox).update(control_url=control_url or "")


def vault_keys(session: Session) -> list[VaultKey]:
    """The credentials of the session's newest sandbox: names, stubs, hosts (never values)."""
    sandbox = Sandbox.objects.filter(session=session).order_by("-created_at").first()
    if sandbox is None:
        return []
    return list(VaultKey.objects.filter(sandbox=sandbox))


def vault_bundle(sandbox: Sandbox) -> dict[str, Any]:
    """The next bundle for ``sandbox``: a new version and the current values of its secrets.

    The version is taken before the secrets are read, so a higher version never carries
    older secrets than a lower one. Credentials the agent no longer has are left out (their
    stubs become unknown to the sidecar); each key's allowed hosts follow the agent's config.
    """
    SandboxVault.objects.filter(sandbox=sandbox).update(version=F("version") + 1)
    version = SandboxVault.objects.values_list("version", flat=True).get(sandbox=sandbox)
    session = Session.objects.select_related("agent").filter(pk=sandbox.session_id).first()
    if session is None:
        raise Unavailable("the sandbox has no session")
    agent = Agent.objects.get(pk=session.agent_id)  # fresh: the agent may have just changed
    values: dict[str, str] = {}
    if settings.LITELLM_API_KEY and _litellm_host():
        values[LITELLM_KEY] = settings.LITELLM_API_KEY
    values.update(crypto.decrypt_map(session.env_vars))
    values.update(crypto.decrypt_map(agent.env_vars))
    wanted = _wanted_keys(agent, session)
    entries = []
    for key in VaultKey.objects.filter(sandbox=sandbox):
        if key.name not in wanted or not values.get(key.name):
            continue
        hosts = wanted[key.name][1]
        if hosts != key.allowed_hosts:
            VaultKey.objects.filter(pk=key.pk).update(allowed_hosts=hosts)
        entries.append(
            {"name": key.name, "stub": key.stub, "value": values[key.name], "allowed_hosts": hosts}
        )
    allow_out = list(agent.allow_out)
    if allow_out and _litellm_host() and LITELLM_KEY in values:
        allow_out.append(_litellm_host())
    return {
        "sandbox_id": str(sandbox.id),
        "version": version,
        "secrets": entries,
        "egress": {"allow_out": allow_out, "deny_out": list(agent.deny_out)},
    }


def _sealing_key(sandbox: Sandbox) -> bytes:
    stored = SandboxVault.objects.values_list("sealing_key", flat=True).get(sandbox=sandbox)
    return crypto.decrypt(stored).encode()


def vault_seal(sandbox: Sandbox, bundle: Mapping[str, Any]) -> bytes:
    """``bundle`` as a Fernet token under the sandbox's sealing key."""
    return Fernet(_sealing_key(sandbox)).encrypt(json.dumps(bundle).encode())


def vault_push(sandbox: Sandbox, *, attempts: int = PUSH_ATTEMPTS) -> int:
    """Seal a new bundle for ``sandbox`` and deliver it to its sidecar; returns its version.

    Retries unreachable sidecars and 5xx answers ``attempts`` times with a doubling
    delay, then raises ``Unavailable``. A ``409 stale_version`` means a newer bundle is
    already applied, which is success. Raises ``VaultPushFailed`` if the sidecar refuses it.
    """
    vault = SandboxVault.objects.filter(sandbox=sandbox).first()
    if vault is None or not vault.control_url:
        raise Unavailable("the sandbox has no vault control endpoint")
    bundle = vault_bundle(sandbox)
    sealed = vault_seal(sandbox, bundle)
    version = bundle["version"]
    del bundle
    client = sidecar_client(vault.control_url)
    delay = PUSH_FIRST_DELAY
    problem = ""
    try:
        for attempt in range(attempts):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                status, body = client.put_bundle(sealed)
            except SidecarUnreachable as error:
                problem = f"unreachable ({error})"
                continue
            if status in (200, 204):
                SandboxVault.objects.filter(sandbox=sandbox).filter(
                    Q(pushed_version__isnull=True) | Q(pushed_version__lt=version)
                ).update(pushed_version=version, pushed_at=timezone.now())
                return version
            error = (body or {}).get("error", "")
            if status == 409 and error == "stale_version":
                return version
            if status < 500:
                raise VaultPushFailed(f"the vault sidecar refused the bundle: {status} {error}")
            problem = f"answered {status}"
    finally:
        client.close()
    raise Unavailable(f"the vault sidecar {problem} after {attempts} attempts")


def vault_resync(sandbox: Sandbox) -> bool:
    """Push the bundle again if the sandbox's sidecar lost it; whether it pushed.

    A restarted sidecar (killed, OOM, a container restart) comes back with no policy and
    refuses all egress until it gets a bundle. Its ``/healthz`` version is then older than
    the last one pushed. ``Unavailable`` when the sidecar does not answer at all.
    """
    vault = SandboxVault.objects.filter(sandbox=sandbox).first()
    if vault is None or not vault.control_url or vault.pushed_version is None:
        return False
    client = sidecar_client(vault.control_url)
    try:
        status, body = client.health()
    except SidecarUnreachable as error:
        raise Unavailable(f"the vault sidecar is unreachable ({error})") from error
    finally:
        client.close()
    held = (body or {}).get("version") if status == 200 else None
    if isinstance(held, int) and held >= vault.pushed_version:
        return False
    logger.warning("vault sidecar of sandbox %s lost its bundle; pushing it again", sandbox.id)
    vault_push(sandbox)
    return True


def vault_push_for_agent(agent: Agent) -> int:
    """After ``agent``'s secrets changed: enqueue a push to each of its running sandboxes.

    The pushes run after the current transaction commits (they read the new secrets).
    Returns how many were enqueued.
    """
    ids = [
        str(pk)
        for pk in Sandbox.objects.filter(
            session__agent=agent,
            session__status__in=Session.LIVE,
            state=Sandbox.State.RUNNING,
            vault__isnull=False,
        ).values_list("pk", flat=True)
    ]
    for sandbox_id in ids:
        transaction.on_commit(
            lambda sandbox_id=sandbox_id: async_task("vault.tasks.vault_push_sandbox", sandbox_id)
        )
    return len(ids)


# --- interception records and the tripwire ---------------------------------------------------


def _record_row(sandbox: Sandbox, session_id: Any, raw: Mapping[str, Any]) -> InterceptionRecord:
    status = raw.get("status")
    return InterceptionRecord(
        session_id=session_id,
        sandbox=sandbox,
        seq=int(raw["seq"]),
        time=datetime.datetime.fromtimestamp(float(raw.get("time") or 0), tz=datetime.UTC),
        method=str(raw.get("method") or "")[:16],
        host=str(raw.get("host") or "")[:255],
        path=str(raw.get("path") or "")[:2000],
        decision=(
            InterceptionRecord.Decision.ALLOWED
            if raw.get("decision") == "allowed"
            else InterceptionRecord.Decision.BLOCKED
        ),
        reason=str(raw.get("reason") or "")[:64],
        credentials=[str(name) for name in raw.get("credentials") or []],
        status=int(status) if isinstance(status, int) and status >= 0 else None,
        bytes_out=max(0, int(raw.get("bytes_out") or 0)),
        bytes_in=max(0, int(raw.get("bytes_in") or 0)),
        duration_ms=float(raw.get("duration_ms") or 0),
    )


def vault_records_pull(sandbox: Sandbox) -> int:
    """Fetch the sidecar's new interception records and store them; returns how many arrived.

    Safe to run concurrently (records are unique per sandbox and ``seq``). Each blocked
    ``credential_not_allowed_for_host`` record raises one ``SecurityEvent`` on the session;
    if the agent has ``stop_on_vault_block``, the session is stopped. ``Unavailable`` when
    the sidecar cannot be reached.
    """
    vault = SandboxVault.objects.filter(sandbox=sandbox).first()
    if vault is None or not vault.control_url or sandbox.session_id is None:
        return 0
    token = read_token(_sealing_key(sandbox))
    client = sidecar_client(vault.control_url)
    after, stored = vault.records_seq, 0
    try:
        for _ in range(PULL_PAGES):
            try:
                status, body = client.interceptions(after=after, limit=PULL_PAGE, read_token=token)
            except SidecarUnreachable as error:
                raise Unavailable(f"the vault sidecar is unreachable ({error})") from error
            if status != 200 or not isinstance(body, dict):
                raise Unavailable(f"the vault sidecar answered {status} to a records pull")
            records = [r for r in body.get("records") or [] if int(r.get("seq", 0)) > after]
            if not records:
                break
            rows = [_record_row(sandbox, sandbox.session_id, r) for r in records]
            InterceptionRecord.objects.bulk_create(rows, ignore_conflicts=True)
            stored += len(rows)
            after = max(row.seq for row in rows)
            SandboxVault.objects.filter(sandbox=sandbox, records_seq__lt=after).update(
                records_seq=after
            )
            if len(records) < PULL_PAGE:
                break
    finally:
        client.close()
    _tripwire(sandbox)
    return stored


def _tripwire(sandbox: Sandbox) -> None:
    """One ``SecurityEvent`` per blocked-credential record; stop the session if configured."""
    pending = InterceptionRecord.objects.filter(
        sandbox=sandbox,
        decision=InterceptionRecord.Decision.BLOCKED,
        reason=BLOCKED_REASON,
        security_event__isnull=True,
    )
    raised = 0
    for record in pending:
        names = ", ".join(record.credentials) or "a credential"
        try:
            with transaction.atomic():
                SecurityEvent.objects.create(
                    session_id=record.session_id,
                    record=record,
                    kind=SecurityEvent.Kind.VAULT_BLOCKED,
                    credentials=record.credentials,
                    host=record.host,
                    detail=f"{names} sent to {record.host}, which it is not allowed for",
                )
        except IntegrityError:  # a concurrent pull raised it already
            continue
        raised += 1
    if not raised:
        return
    session = Session.objects.select_related("agent").filter(pk=sandbox.session_id).first()
    if session is not None and session.is_live and session.agent.stop_on_vault_block:
        session_id = str(session.id)
        transaction.on_commit(
            lambda: async_task(
                "sandboxes.tasks.session_stop", session_id, "vault blocked a credential"
            )
        )


def vault_records_for(session: Session, *, refresh: bool) -> Any:
    """The session's stored interception records (a queryset, oldest first).

    With ``refresh``, the live sandbox's sidecar is pulled first; an unreachable sidecar
    does not hide what is already stored.
    """
    if refresh and session.is_live:
        for sandbox in Sandbox.objects.filter(session=session, state=Sandbox.State.RUNNING):
            try:
                vault_records_pull(sandbox)
            except Unavailable as error:
                logger.info("interceptions of session %s: %s", session.id, error.message)
    return InterceptionRecord.objects.filter(session=session)


def security_events_for(session: Session) -> Any:
    """The session's security events (a queryset, oldest first)."""
    return SecurityEvent.objects.filter(session=session)


def vault_blocked_count() -> int:
    """Every blocked-credential event ever raised (``lap_vault_blocked_total``)."""
    return SecurityEvent.objects.filter(kind=SecurityEvent.Kind.VAULT_BLOCKED).count()


# --- key rotation ----------------------------------------------------------------------------


def _rotate_rows(queryset: Any, field: str, *, is_map: bool) -> int:
    changed = 0
    for pk, stored in queryset.values_list("pk", field).iterator():
        if not stored:
            continue
        if is_map:
            fresh: Any = {name: crypto.rotate(token) for name, token in stored.items()}
        else:
            fresh = crypto.rotate(stored)
        queryset.model.objects.filter(pk=pk, **{field: stored}).update(**{field: fresh})
        changed += 1
    return changed


def vault_reencrypt_all() -> dict[str, int]:
    """Re-encrypt every encrypted field with the newest of ``LAP_ENCRYPTION_KEYS``.

    Idempotent; a row changed concurrently keeps its newer value (compare-and-set on the
    old ciphertext). Raises ``DecryptionFailed`` if a value opens with none of the keys.
    Returns how many values of each kind were rewritten.
    """
    return {
        "agent secrets": _rotate_rows(Agent.objects.all(), "env_vars", is_map=True),
        "session secrets": _rotate_rows(Session.objects.all(), "env_vars", is_map=True),
        "runner tokens": _rotate_rows(Sandbox.objects.all(), "runner_token", is_map=False),
        "sealing keys": _rotate_rows(SandboxVault.objects.all(), "sealing_key", is_map=False),
        "platform CA keys": _rotate_rows(PlatformCA.objects.all(), "key", is_map=False),
    }
