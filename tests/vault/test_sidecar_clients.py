"""Real clients through the sidecar: curl, git (credential helper, Basic auth), Node fetch."""
# ruff: noqa: F811 (pytest fixtures imported from sidecar_fixtures are redefined as arguments)

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.harness_tools import CLIS, require_cli
from tests.vault.sidecar_fixtures import (  # noqa: F401 (fixtures)
    VaultEnv,
    pki,
    session_sidecar,
    upstream,
    vault_env,
)


def _client_env(env: VaultEnv) -> dict[str, str]:
    proxy = env.sidecar.proxy_url
    root = str(env.sidecar.root_pem)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(env.sidecar.workdir),
        "https_proxy": proxy,
        "HTTPS_PROXY": proxy,
        "NO_PROXY": "",
        "SSL_CERT_FILE": root,
        "GIT_SSL_CAINFO": root,
        "CURL_CA_BUNDLE": root,
        "NODE_EXTRA_CA_CERTS": root,
        "NODE_USE_ENV_PROXY": "1",
        "GH_TOKEN": env.stub("GH"),
    }


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_header_arrives_with_the_real_value(vault_env: VaultEnv):
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-H",
            f"Authorization: token {vault_env.stub('GH')}",
            f"{vault_env.upstream.url}/curl",
        ],
        env=_client_env(vault_env),
        capture_output=True,
        timeout=30,
        check=True,
    )
    echoed = json.loads(result.stdout)
    assert vault_env.value("GH") not in result.stdout.decode()
    seen = dict((k.lower(), v) for k, v in vault_env.upstream.received[-1]["headers"])
    assert seen["authorization"] == f"token {vault_env.value('GH')}"
    assert echoed["path"] == "/curl"


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_ls_remote_with_credential_helper_uses_basic_auth(vault_env: VaultEnv):
    vault_env.upstream.git_password = vault_env.value("GH")
    helper = '!f() { echo username=x-access-token; echo "password=$GH_TOKEN"; }; f'
    result = subprocess.run(
        [
            "git",
            "-c",
            f"credential.helper={helper}",
            "ls-remote",
            f"{vault_env.upstream.url}/repo.git",
        ],
        env={**_client_env(vault_env), "GIT_TERMINAL_PROMPT": "0"},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    refs = [r for r in vault_env.upstream.received if r["path"].startswith("/repo.git")]
    assert len(refs) == 2  # the anonymous try (401), then the one with credentials


def test_node_fetch_through_the_env_proxy(vault_env: VaultEnv):
    """The sandboxes' Node.js (the harness tools' pinned one) sends fetch() through the proxy
    of ``HTTPS_PROXY`` because of ``NODE_USE_ENV_PROXY``; Debian's Node 20 ignores it."""
    node = require_cli("node") / CLIS["node"]
    script = (
        "fetch(process.argv[1], {headers: {authorization: 'Bearer ' + process.env.GH_TOKEN}})"
        ".then(r => r.text()).then(t => console.log(t))"
        ".catch(e => { console.error(String(e.cause || e)); process.exit(3); })"
    )
    result = subprocess.run(
        [str(node), "-e", script, f"{vault_env.upstream.url}/node"],
        env=_client_env(vault_env),
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr.decode()
    seen = dict((k.lower(), v) for k, v in vault_env.upstream.received[-1]["headers"])
    assert seen["authorization"] == f"Bearer {vault_env.value('GH')}"
    assert json.loads(result.stdout)["path"] == "/node"
