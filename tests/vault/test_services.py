"""Vault services against the FakeDriver, whose sandboxes hold the sidecar's real ``Vault``."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from agents.services import agent_update
from sandboxes.models import Sandbox, Session
from sandboxes.services import session_bring_up, session_create
from tests.conftest import SECRET
from tests.vault.records import record_blocked
from vault import crypto, services
from vault.models import InterceptionRecord, PlatformCA, SandboxVault, SecurityEvent, VaultKey

pytestmark = pytest.mark.django_db


def sandbox_of(session: Session) -> Sandbox:
    return Sandbox.objects.get(session=session)


def test_bring_up_gives_the_harness_stubs_and_the_sidecar_the_values(ready_session, fake_driver):
    sandbox = sandbox_of(ready_session)
    started = fake_driver.sandboxes[str(sandbox.id)].started
    stub = started["env"]["GITHUB_TOKEN"]
    assert (
        stub.startswith("lap_stub_GITHUB_TOKEN_")
        and len(stub) == len("lap_stub_GITHUB_TOKEN_") + 32
    )
    assert SECRET not in json.dumps(started)
    assert started["env"]["HTTPS_PROXY"]
    policy = fake_driver.vault(str(sandbox.id)).policy
    assert policy.version == 1
    (secret,) = policy.by_stub.values()
    assert (secret.name, secret.value) == ("GITHUB_TOKEN", SECRET.encode())
    key = VaultKey.objects.get(sandbox=sandbox)
    assert (key.name, key.stub, key.allowed_hosts) == ("GITHUB_TOKEN", stub, ["api.github.com"])
    vault = SandboxVault.objects.get(sandbox=sandbox)
    assert (vault.version, vault.pushed_version) == (1, 1)
    assert vault.control_url == f"fake-vault://{sandbox.id}"


def test_session_secrets_and_the_platform_key_are_stubbed_too(agent, user, fake_driver, settings):
    settings.LITELLM_API_BASE = "https://llm.example.com/v1"
    settings.LITELLM_API_KEY = "sk-platform-value"
    session = session_create(agent=agent, user=user, env_vars={"EXTRA": "extra-value"})
    session_bring_up(session.id)
    sandbox = sandbox_of(session)
    env = fake_driver.sandboxes[str(sandbox.id)].started["env"]
    assert env["EXTRA"].startswith("lap_stub_EXTRA_")
    assert env["LITELLM_API_KEY"].startswith("lap_stub_LITELLM_API_KEY_")
    assert "extra-value" not in json.dumps(env) and "sk-platform-value" not in json.dumps(env)
    bundle = services.vault_bundle(sandbox)
    values = {s["name"]: (s["value"], s["allowed_hosts"]) for s in bundle["secrets"]}
    assert values == {
        "GITHUB_TOKEN": (SECRET, ["api.github.com"]),
        "EXTRA": ("extra-value", ["*.github.com", "api.github.com"]),
        "LITELLM_API_KEY": ("sk-platform-value", ["llm.example.com"]),
    }
    assert bundle["egress"]["allow_out"][-1] == "llm.example.com"


def test_values_leave_only_inside_the_sealed_bundle(ready_session):
    sandbox = sandbox_of(ready_session)
    bundle = services.vault_bundle(sandbox)
    sealed = services.vault_seal(sandbox, bundle)
    assert SECRET.encode() not in sealed
    key = crypto.decrypt(SandboxVault.objects.get(sandbox=sandbox).sealing_key).encode()
    assert json.loads(Fernet(key).decrypt(sealed)) == bundle
    with pytest.raises(Exception):  # noqa: B017 - any other key cannot open it
        Fernet(Fernet.generate_key()).decrypt(sealed)
    stored = SandboxVault.objects.get(sandbox=sandbox).sealing_key
    assert key.decode() not in stored


def test_bundle_versions_only_grow(ready_session):
    sandbox = sandbox_of(ready_session)
    versions = [services.vault_bundle(sandbox)["version"] for _ in range(3)]
    assert versions == [2, 3, 4]


def test_agent_update_pushes_new_secrets_to_running_sandboxes(
    ready_session, fake_driver, django_capture_on_commit_callbacks
):
    sandbox = sandbox_of(ready_session)
    vault = fake_driver.vault(str(sandbox.id))
    stub = VaultKey.objects.get(sandbox=sandbox).stub
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        agent_update(ready_session.agent, env_vars={"GITHUB_TOKEN": "ghp_rotated"})
    assert len(callbacks) == 1
    assert vault.policy.version == 2
    assert vault.policy.by_stub[stub.encode()].value == b"ghp_rotated"

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        agent_update(ready_session.agent, prompt="only the prompt")
    assert callbacks == []
    assert vault.policy.version == 2


def test_a_removed_secret_leaves_the_bundle(ready_session, fake_driver):
    sandbox = sandbox_of(ready_session)
    agent_update(ready_session.agent, env_vars={}, env_var_hosts={})
    services.vault_push(sandbox)
    assert fake_driver.vault(str(sandbox.id)).policy.by_stub == {}


def test_unreachable_sidecar_fails_bring_up_with_a_reason(session, fake_driver, monkeypatch):
    monkeypatch.setattr(services, "PUSH_FIRST_DELAY", 0)
    fake_driver.fail("vault", "ConnectError")
    session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == "failed"
    assert session.failure_reason.startswith("pushing secrets to the vault failed")
    assert SECRET not in session.failure_reason


def test_refused_bundle_fails_bring_up(session, fake_driver, monkeypatch):
    def wrong_key(sandbox, bundle):
        return Fernet(Fernet.generate_key()).encrypt(json.dumps(bundle).encode())

    monkeypatch.setattr(services, "vault_seal", wrong_key)
    session_bring_up(session.id)
    session.refresh_from_db()
    assert session.status == "failed"
    assert "refused the bundle: 400 undecryptable" in session.failure_reason


def test_records_are_pulled_once_and_a_blocked_credential_raises_one_event(
    ready_session, fake_driver
):
    sandbox = sandbox_of(ready_session)
    vault = fake_driver.vault(str(sandbox.id))
    vault.record(
        method="GET",
        host="api.github.com",
        path="/user",
        decision="allowed",
        reason=None,
        credentials=["GITHUB_TOKEN"],
        status=200,
        bytes_out=10,
        bytes_in=20,
        duration_ms=1.5,
    )
    record_blocked(vault)
    assert services.vault_records_pull(sandbox) == 2
    assert services.vault_records_pull(sandbox) == 0
    (first, allowed), (second, blocked) = InterceptionRecord.objects.values_list("seq", "decision")
    assert (allowed, blocked, second) == ("allowed", "blocked", first + 1)
    (event,) = SecurityEvent.objects.all()
    assert (event.session_id, event.host, event.credentials) == (
        ready_session.id,
        "evil.example",
        ["GITHUB_TOKEN"],
    )
    assert services.vault_blocked_count() == 1
    ready_session.refresh_from_db()
    assert ready_session.status == "ready"  # stop_on_vault_block is off


def test_stop_on_vault_block_stops_the_session(
    ready_session, fake_driver, django_capture_on_commit_callbacks
):
    agent_update(ready_session.agent, stop_on_vault_block=True)
    sandbox = sandbox_of(ready_session)
    record_blocked(fake_driver.vault(str(sandbox.id)), host="x.test")
    with django_capture_on_commit_callbacks(execute=True):
        services.vault_records_pull(sandbox)
    ready_session.refresh_from_db()
    assert ready_session.status == "dead"
    assert ready_session.failure_reason == "vault blocked a credential"


def test_lap_reencrypt_moves_every_secret_to_the_newest_key(ready_session, settings):
    old = settings.LAP_ENCRYPTION_KEYS[0]
    new = Fernet.generate_key().decode()
    settings.LAP_ENCRYPTION_KEYS = [new, old]
    call_command("lap_reencrypt")
    settings.LAP_ENCRYPTION_KEYS = [new]
    agent = ready_session.agent
    agent.refresh_from_db()
    assert crypto.decrypt_map(agent.env_vars) == {"GITHUB_TOKEN": SECRET}
    sandbox = sandbox_of(ready_session)
    crypto.decrypt(sandbox.runner_token)
    crypto.decrypt(SandboxVault.objects.get(sandbox=sandbox).sealing_key)
    crypto.decrypt(PlatformCA.objects.get().key)
    assert services.vault_push(sandbox) == 2
