"""The Dockerfiles: linted by hadolint, one image per harness, non-root users, build contexts
that carry what each image copies, Python versions taken from the exact lock."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agents.harnesses import harness_ids
from tests.deploy.manifests import DEPLOY, ROOT, venv_tool

DOCKER = DEPLOY / "docker"
DOCKERFILES = sorted(DOCKER.glob("*/Dockerfile"))
IMAGE_USERS = {"platform": 10000, "runner-base": 10001, "vault": 10002}


def image_ids() -> list[str]:
    return [dockerfile.parent.name for dockerfile in DOCKERFILES]


def final_stage(dockerfile: Path) -> list[str]:
    """The instructions after the last FROM, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def build_arg(dockerfile: Path, name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", dockerfile.read_text(), re.MULTILINE)
    return value


def test_every_harness_and_service_has_an_image():
    harnesses = {f"harness-{harness}" for harness in harness_ids()}
    assert set(image_ids()) == {"platform", "runner-base", "vault", *harnesses}
    listed = subprocess.run(
        [DEPLOY / "build-images.sh", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(listed) == sorted(image_ids())
    assert listed.index("runner-base") < min(listed.index(h) for h in harnesses)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_ids())
def test_hadolint_finds_nothing(dockerfile):
    result = subprocess.run(
        [venv_tool("hadolint"), "--no-color", dockerfile.relative_to(ROOT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_ids())
def test_images_run_as_their_numeric_non_root_user(dockerfile):
    image = dockerfile.parent.name
    users = [line.split()[1] for line in final_stage(dockerfile) if line.startswith("USER ")]
    uid = IMAGE_USERS.get(image, IMAGE_USERS["runner-base"])
    if image.startswith("harness-"):
        # FROM runner-base: its user, unless the file switches away and back.
        assert build_arg(dockerfile, "RUNNER_BASE").startswith("lap/runner-base:")
        assert users in ([], ["0", "${UID}:${UID}"]), users
        if users:
            assert build_arg(dockerfile, "UID") == str(uid)
        return
    assert users == ["${UID}:${UID}"]
    assert build_arg(dockerfile, "UID") == str(uid)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_ids())
def test_base_images_are_pinned(dockerfile):
    for name in ("PYTHON_IMAGE", "NODE_IMAGE"):
        if f"ARG {name}=" in dockerfile.read_text():
            image = build_arg(dockerfile, name)
            assert re.fullmatch(r"(python|node):\d+\.\d+\.\d+-(slim-)?bookworm(-slim)?", image)


def whitelisted(path: str, ignore_file: Path) -> bool:
    """Whether the ``*`` + ``!path`` style ignore file lets ``path`` into the build context."""
    lines = [line.strip() for line in ignore_file.read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", f"{ignore_file}: start from nothing, then name what goes in"
    allowed = [pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")]
    return any(path == entry or path.startswith(f"{entry}/") for entry in allowed)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=image_ids())
def test_the_build_context_carries_what_the_image_copies(dockerfile):
    """The context is the repository root, cut down by Dockerfile.dockerignore."""
    ignore_file = dockerfile.with_name("Dockerfile.dockerignore")
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    sources = re.findall(r"source=([^,\s]+)", text)
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from=") for w in words):
            sources += words[1:-1]
    for source in sources:
        assert (ROOT / source).exists(), source
        assert whitelisted(source, ignore_file), f"{source} is not in {ignore_file.name}"


@pytest.mark.parametrize("image", ["runner-base", "vault"])
def test_python_dependencies_take_their_versions_from_the_lock(image):
    lock = {
        re.sub(r"[-_.]+", "-", line.split("==")[0]).lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
    }
    names = [
        line.strip()
        for line in (DOCKER / image / "requirements.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert names and all(name.lower() in lock for name in names)
    assert "-c requirements.txt" in (DOCKER / image / "Dockerfile").read_text()


def test_the_agent_sdk_image_installs_the_harness_lock():
    """The image installs the same exact lock as ``make harnesses`` does for local sandboxes."""
    lines = (ROOT / "harnesses" / "sdk-requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line and not line.startswith("#")]
    assert any(pin.startswith("claude-agent-sdk==") for pin in pins)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.+-]*", pin) for pin in pins)
    dockerfile = (DOCKER / "harness-claude-agent-sdk" / "Dockerfile").read_text()
    assert "source=harnesses/sdk-requirements.txt" in dockerfile
    assert "--no-deps" in dockerfile


@pytest.mark.parametrize(
    ("image", "arg", "package"),
    [
        ("harness-claude-code", "CLAUDE_CODE_VERSION", "@anthropic-ai/claude-code"),
        ("harness-codex", "CODEX_VERSION", "@openai/codex"),
        ("harness-opencode", "OPENCODE_VERSION", "opencode-ai"),
    ],
)
def test_cli_images_pin_the_versions_make_harnesses_installs(image, arg, package):
    pins = json.loads((ROOT / "harnesses" / "package.json").read_text())["dependencies"]
    assert build_arg(DOCKER / image / "Dockerfile", arg) == pins[package]


def test_the_codex_image_ships_the_node_local_sandboxes_run():
    """Both honour ``NODE_USE_ENV_PROXY`` (Node 20 does not), so fetch() finds the vault."""
    pins = json.loads((ROOT / "harnesses" / "package.json").read_text())["dependencies"]
    image = build_arg(DOCKER / "harness-codex" / "Dockerfile", "NODE_IMAGE")
    assert image == f"node:{pins['node']}-bookworm-slim"


def assemble(image: str, into: Path) -> None:
    """Lay out what the Dockerfile's COPY lines take from the repository, under ``into``."""
    for line in (DOCKER / image / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:2] == ["COPY", "--from=assets"]:
            # The assets stage runs `npm ci` in /src as `make assets` does in the checkout.
            words = ["COPY", *(w.removeprefix("/src/") for w in words[2:])]
        if words[:1] != ["COPY"] or any(w.startswith("--") for w in words):
            continue
        *sources, dest = words[1:]
        if not dest.startswith("/"):
            continue  # into the build stage's WORKDIR: build inputs, not the image's code
        for source in sources:
            target = into / dest.lstrip("/")
            if dest.endswith("/"):
                target = target / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(ROOT / source, target)


PYTHON_ENTRY_POINTS = {
    "runner-base": (["-m", "sandboxes.runner", "--help"], "opt/lap", "--listen"),
    "vault": (["-m", "sidecar", "--help"], "opt/lap", "--proxy"),
    "platform": (["manage.py", "check"], "app", "no issues"),
}


@pytest.mark.parametrize("image", sorted(PYTHON_ENTRY_POINTS))
def test_python_images_run_from_what_they_copy(image, tmp_path):
    """The code an image copies is all its entry point needs (``python -S``: site-packages
    on the path without the worktree's editable install)."""
    argv, home, expected = PYTHON_ENTRY_POINTS[image]
    assemble(image, tmp_path)
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{tmp_path / home}:{site_packages}",
        "LAP_HOME": str(tmp_path / "state"),
        "DJANGO_SETTINGS_MODULE": "lapsite.settings",
    }
    result = subprocess.run(
        [sys.executable, "-S", *argv],
        cwd=tmp_path / home,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
