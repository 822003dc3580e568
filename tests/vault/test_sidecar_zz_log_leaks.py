"""Runs last (by name): no log line any sidecar of this session wrote holds a value or a stub."""
# ruff: noqa: F811 (pytest fixtures imported from sidecar_fixtures are redefined as arguments)

from __future__ import annotations

from tests.vault.sidecar_fixtures import (  # noqa: F401 (fixtures)
    ALL_SECRETS,
    LOG_DIR,
    VaultEnv,
    pki,
    session_sidecar,
    upstream,
    vault_env,
)


def test_no_log_line_holds_a_value_or_a_stub(vault_env: VaultEnv):
    with vault_env.sidecar.client() as client:
        client.get(f"{vault_env.upstream.url}/x", headers={"A": vault_env.stub("GH")})
        client.get(f"{vault_env.upstream.url}/x", headers={"A": vault_env.stub("OTHER")})
        client.get(f"{vault_env.upstream.url}/x", headers={"A": "lap_stub_NOPE_0"})
    vault_env.sidecar.push(vault_env.bundle(version=1))
    logs = sorted(LOG_DIR.glob("*.log"))
    text = "\n".join(path.read_text(errors="replace") for path in logs)
    assert logs and "bundle version" in text
    leaks = sorted(s[:12] for s in ALL_SECRETS if s in text)
    assert leaks == [], f"{len(leaks)} secrets or stubs in sidecar logs"
    assert "lap_stub_" not in text
