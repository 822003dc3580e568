"""Bundle pushes, restarts and large uploads against a real sidecar process."""
# ruff: noqa: F811 (pytest fixtures imported from sidecar_fixtures are redefined as arguments)

from __future__ import annotations

import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

from tests.vault.sidecar_fixtures import (  # noqa: F401 (fixtures)
    VaultEnv,
    new_secret,
    pki,
    session_sidecar,
    start_sidecar,
    upstream,
    vault_env,
)
from tests.vault.sidecar_support import Pki, Upstream


def _authorization_seen(env: VaultEnv) -> str:
    with env.sidecar.client() as client:
        response = client.get(f"{env.upstream.url}/x", headers={"Authorization": env.stub("GH")})
    assert response.status_code == 200, response.text
    return dict((k.lower(), v) for k, v in env.upstream.received[-1]["headers"])["authorization"]


def test_bad_bundles_are_rejected_and_the_old_policy_stays(vault_env: VaultEnv):
    current = vault_env.bundle(version=vault_env.version)
    replay = vault_env.sidecar.seal(current)
    with vault_env.sidecar.control_client() as client:
        assert client.put("/bundle", content=replay).json() == {"error": "stale_version"}
        older = vault_env.sidecar.seal(vault_env.bundle(version=vault_env.version - 1))
        assert client.put("/bundle", content=older).status_code == 409
        foreign = vault_env.sidecar.seal(vault_env.bundle(sandbox_id="sb-other"))
        response = client.put("/bundle", content=foreign)
        assert (response.status_code, response.json()) == (403, {"error": "sandbox_mismatch"})
        wrong_key = vault_env.sidecar.seal(vault_env.bundle(), key=Fernet.generate_key())
        response = client.put("/bundle", content=wrong_key)
        assert (response.status_code, response.json()) == (400, {"error": "undecryptable"})
        truncated = Fernet(vault_env.sidecar.key).encrypt(b'{"sandbox_id": "sb-test", "vers')
        assert client.put("/bundle", content=truncated).json() == {"error": "malformed"}
        assert client.put("/bundle", content=b"garbage").status_code == 400
        assert client.get("/healthz").json()["version"] == vault_env.version
    assert _authorization_seen(vault_env) == vault_env.value("GH")


def test_restart_fails_closed_until_a_bundle_is_pushed_again(pki: Pki, upstream: Upstream):
    sidecar = start_sidecar(pki)
    try:
        env = VaultEnv(pki, upstream, sidecar)
        env.secrets["GH"] = new_secret("GH", ["localhost"])
        env.push()
        assert _authorization_seen(env) == env.value("GH")
        sidecar.stop()
        sidecar.start()
        with sidecar.client() as client:
            try:
                status = client.get(f"{upstream.url}/x").status_code
            except httpx.ProxyError as error:
                status = int(str(error).split()[0])
        assert status == 503
        with sidecar.control_client() as control:
            assert control.get("/healthz").json() == {"ok": True, "version": None}
        upstream.received.clear()
        env.version = 0
        env.push()
        assert _authorization_seen(env) == env.value("GH")
    finally:
        sidecar.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_50_mb_upload_streams_without_buffering(vault_env: VaultEnv):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    process = vault_env.sidecar.process
    assert process is not None
    before = _rss_kib(process.pid)
    block = b"x" * (1024 * 1024)

    def body():
        for _ in range(50):
            yield block
        yield f"end {stub}".encode()

    started = time.monotonic()
    with vault_env.sidecar.client() as client:
        response = client.put(f"{vault_env.upstream.url}/upload", content=body())
    assert response.status_code == 200
    seen = vault_env.upstream.received[-1]
    assert seen["size"] == 50 * 1024 * 1024 + len(f"end {value}")
    assert seen["tail"].endswith(f"end {value}")
    grown_mib = (_rss_kib(process.pid) - before) / 1024
    assert grown_mib < 20, f"sidecar peak RSS grew by {grown_mib:.1f} MiB"
    assert time.monotonic() - started < 60


def test_large_content_length_upload_streams_and_swaps(vault_env: VaultEnv):
    stub, value = vault_env.stub("GH"), vault_env.value("GH")
    payload = b"y" * (3 * 1024 * 1024) + f" {stub}".encode()
    with vault_env.sidecar.client() as client:
        response = client.put(f"{vault_env.upstream.url}/upload", content=payload)
    assert response.status_code == 200
    seen = vault_env.upstream.received[-1]
    assert seen["tail"].endswith(f" {value}")
    assert seen["size"] == len(payload) - len(stub) + len(value)
