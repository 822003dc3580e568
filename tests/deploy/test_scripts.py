"""The deployment scripts: shellcheck-clean, and what they do, run against recording test
doubles of docker, kind and kubectl (no Docker engine and no cluster run here)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.deploy.manifests import DEPLOY, ROOT, venv_tool

SCRIPTS = sorted(DEPLOY.rglob("*.sh"))

# One program plays docker, kind and kubectl (by the name it was called as): it appends its
# argv to calls.jsonl, keeps Secrets as files (kubectl get/create secret) and answers what
# the scripts ask of kind.
FAKE_TOOL = textwrap.dedent(
    """\
    import json, os, shutil, sys
    from pathlib import Path

    state = Path(os.environ["FAKE_STATE"])
    tool, args = Path(sys.argv[0]).name, sys.argv[1:]
    with open(state / "calls.jsonl", "a") as log:
        log.write(json.dumps([tool, *args]) + "\\n")
    if tool == "kind" and args[:1] == ["version"]:
        print("kind v0.33.0 go1.25.4 linux/amd64")
    if tool == "kubectl" and "secret" in args:
        verb = args[args.index("secret") - 1]
        if verb == "get":
            sys.exit(0 if (state / f"secret-{args[-1]}.env").exists() else 1)
        if verb == "create":
            name = args[args.index("generic") + 1]
            (env_file,) = [a.split("=", 1)[1] for a in args if a.startswith("--from-env-file=")]
            mode = os.stat(os.path.dirname(env_file)).st_mode & 0o777
            shutil.copy(env_file, state / f"secret-{name}.env")
            (state / f"secret-{name}.dirmode").write_text(oct(mode))
    """
)


@pytest.fixture
def fakes(tmp_path):
    """PATH with docker, kind and kubectl doubles first; returns (env, state directory)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    program = bin_dir / "fake_tool.py"
    program.write_text(f"#!{sys.executable}\n{FAKE_TOOL}")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    for tool in ("docker", "kind", "kubectl"):
        (bin_dir / tool).symlink_to(program)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "LITELLM_API_KEY")
    }
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_STATE=str(state))
    return env, state


def run(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [script, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def calls(state: Path, tool: str) -> list[list[str]]:
    lines = (state / "calls.jsonl").read_text().splitlines()
    return [call[1:] for call in map(json.loads, lines) if call[0] == tool]


def secret(state: Path, name: str) -> dict[str, str]:
    assert (state / f"secret-{name}.dirmode").read_text() == "0o700"
    lines = (state / f"secret-{name}.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def assert_never_shown(values, state: Path, *outputs: str) -> None:
    """No value on any command line, and none printed."""
    logged = (state / "calls.jsonl").read_text()
    for value in values:
        assert value not in logged
        assert not any(value in output for output in outputs)


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shellcheck_finds_nothing(script):
    result = subprocess.run(
        [venv_tool("shellcheck"), "--norc", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.access(script, os.X_OK)


def test_bundled_secrets_are_random_private_and_consistent(fakes):
    env, state = fakes
    result = run(DEPLOY / "create-secrets.sh", env, "--bundled", "--context", "kind-x")
    assert result.returncode == 0, result.stderr
    keys = secret(state, "lap-keys")
    assert set(keys) == {"LAP_MASTER_KEY", "DJANGO_SECRET_KEY", "LAP_ENCRYPTION_KEYS"}
    assert keys["LAP_MASTER_KEY"].startswith("lap-") and len(keys["LAP_MASTER_KEY"]) > 40
    Fernet(keys["LAP_ENCRYPTION_KEYS"])  # a valid key, or this raises
    password = secret(state, "lap-postgres")["password"]
    database = secret(state, "lap-database")
    url = f"postgres://lap:{password}@lap-postgres.lap.svc:5432/lap"
    assert database["DATABASE_URL"] == url
    assert database["REDIS_URL"] == "redis://lap-redis.lap.svc:6379/0"
    assert all(call[:2] == ["--context", "kind-x"] for call in calls(state, "kubectl"))
    assert_never_shown([*keys.values(), password], state, result.stdout, result.stderr)


def test_existing_secrets_are_kept(fakes):
    env, state = fakes
    assert run(DEPLOY / "create-secrets.sh", env, "--bundled").returncode == 0
    first = secret(state, "lap-keys")
    again = run(DEPLOY / "create-secrets.sh", env, "--bundled")
    assert again.returncode == 0, again.stderr
    assert secret(state, "lap-keys") == first
    creates = [call for call in calls(state, "kubectl") if call[:2] == ["create", "secret"]]
    assert len(creates) == 3  # the first run's only
    assert "kept" in again.stdout


def test_external_secrets_take_the_datastores_from_the_environment(fakes):
    env, state = fakes
    refused = run(DEPLOY / "create-secrets.sh", env)
    assert refused.returncode != 0
    assert "set DATABASE_URL and REDIS_URL" in refused.stderr
    assert not list(state.glob("secret-*"))  # refused before creating anything
    env.update(
        DATABASE_URL="postgres://lap:pw@db.internal:5432/lap",
        REDIS_URL="rediss://cache.internal:6379/0",
        LITELLM_API_KEY="sk-litellm-test-value",
    )
    result = run(DEPLOY / "create-secrets.sh", env)
    assert result.returncode == 0, result.stderr
    assert secret(state, "lap-database") == {
        "DATABASE_URL": env["DATABASE_URL"],
        "REDIS_URL": env["REDIS_URL"],
    }
    assert secret(state, "lap-keys")["LITELLM_API_KEY"] == "sk-litellm-test-value"
    assert not (state / "secret-lap-postgres.env").exists()
    assert_never_shown(
        ["pw@db.internal", "sk-litellm-test-value"], state, result.stdout, result.stderr
    )


def test_kind_up_builds_loads_and_applies_in_order(fakes):
    env, state = fakes
    result = run(DEPLOY / "kind" / "up.sh", env)
    assert result.returncode == 0, result.stderr
    images = run(DEPLOY / "build-images.sh", env, "--list").stdout.split()
    refs = [f"lap/{image}:0.1.0" for image in images]

    kind = calls(state, "kind")
    config = str(DEPLOY / "kind" / "cluster.yaml")
    assert kind[2][:6] == ["create", "cluster", "--name", "lap", "--config", config]
    assert kind[-1] == ["load", "docker-image", "--name", "lap", *refs]

    builds = calls(state, "docker")
    assert [build[build.index("--tag") + 1] for build in builds] == refs
    for image, build in zip(images, builds, strict=True):
        assert build[0] == "build" and build[-1] == str(ROOT)
        assert build[build.index("--file") + 1] == str(DEPLOY / "docker" / image / "Dockerfile")
        base = "RUNNER_BASE=lap/runner-base:0.1.0"
        assert (base in build) is image.startswith("harness-"), image

    kubectl = [" ".join(call) for call in calls(state, "kubectl")]
    assert all(call.startswith("--context kind-lap ") for call in kubectl)
    order = [
        "create secret generic lap-keys",
        "create secret generic lap-database",
        "delete job lap-migrate",
        f"apply --kustomize {DEPLOY / 'kustomize' / 'overlays' / 'kind'}",
        "wait --for=condition=complete job/lap-migrate",
        "rollout restart deployment/lap-web deployment/lap-worker",
        "rollout status deployment/lap-worker",
    ]
    positions = [next(i for i, c in enumerate(kubectl) if step in c) for step in order]
    assert positions == sorted(positions)
    keys = secret(state, "lap-keys")
    assert "http://127.0.0.1:8000/" in result.stdout
    assert_never_shown(keys.values(), state, result.stdout, result.stderr)
