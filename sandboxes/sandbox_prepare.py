"""Getting a running sandbox ready for its harness, through the runner's ``/exec``.

Driver-independent: whatever runs the sandbox (a bwrap jail with ``/opt/lap-tools``, a pod
whose image bakes the CLIs), these checks and writes see exactly what the harness will see.

- ``sandbox_prepare`` checks that the harness's programs are on its ``PATH`` (failing the
  session with a reason naming ``make harnesses`` when not) and writes its setup files, in one
  command.
- ``repo_clone`` clones the agent's repository with git inside the sandbox, so the fetch goes
  through the vault (``HTTPS_PROXY``) and authenticates with the stub token through the
  credential helper ``harness_setup`` configured; the sandbox never holds the real token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agents.harnesses import Harness
from lapsite.errors import LapError
from sandboxes.harness_setup import HarnessFile

REPO_DIR = "/work/repo"
PREPARE_TIMEOUT = 60.0
CLONE_TIMEOUT = 600.0
MISSING = 127
# $1: how many programs follow; then the programs; then (path, octal mode, content) triples.
PREPARE = """umask 077
n=$1; shift
while [ "$n" -gt 0 ]; do
    command -v "$1" >/dev/null 2>&1 || { printf %s "$1"; exit 127; }
    shift; n=$((n - 1))
done
while [ $# -gt 0 ]; do
    mkdir -p "$(dirname "$1")" && printf %s "$3" > "$1" && chmod "$2" "$1" || exit 1
    shift 3
done
"""


class HarnessSetupFailed(LapError):
    """The sandbox could not be made ready for the harness (a missing CLI, a failed clone)."""

    status = 502
    code = "harness_setup_failed"
    default_message = "preparing the sandbox for the harness failed"


def sandbox_prepare(
    client: Any, *, harness: Harness, env: Mapping[str, str], files: Sequence[HarnessFile]
) -> None:
    """Check the harness's programs and write its files; ``HarnessSetupFailed`` if not."""
    argv = ["sh", "-c", PREPARE, "lap-prepare", str(len(harness.requires)), *harness.requires]
    for item in files:
        argv += [item.path, format(item.mode, "o"), item.content]
    code, out, err = _run(client, argv, env, PREPARE_TIMEOUT)
    if code == MISSING:
        raise HarnessSetupFailed(
            f"the {harness.id} harness is not installed in this sandbox ({out.strip()!r} is "
            "not on its PATH): run `make harnesses` on the platform host (it installs the "
            "harness CLIs into LAP_TOOLS_DIR, which the local driver mounts into sandboxes)"
        )
    if code != 0:
        raise HarnessSetupFailed(f"preparing the {harness.id} harness failed: {_tail(err)}")


def repo_clone(client: Any, *, env: Mapping[str, str], url: str, branch: str) -> str:
    """Clone ``url`` (``branch``, shallow) into ``REPO_DIR``; returns that directory."""
    argv = ["git", "clone", "--depth", "1", *(["--branch", branch] if branch else [])]
    argv += ["--", url, REPO_DIR]
    code, _, err = _run(client, argv, {**env, "GIT_TERMINAL_PROMPT": "0"}, CLONE_TIMEOUT)
    if code != 0:
        where = f" (branch {branch})" if branch else ""
        reason = "timed out" if code is None else _tail(err)
        raise HarnessSetupFailed(f"cloning {redact_url(url)}{where} failed: {reason}")
    return REPO_DIR


def redact_url(url: str) -> str:
    """``url`` without any user or password in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _run(
    client: Any, argv: list[str], env: Mapping[str, str], timeout: float
) -> tuple[int | None, str, str]:
    out: list[str] = []
    err: list[str] = []
    code: int | None = None
    for event in client.exec(argv, timeout=timeout, cwd="/work", env=dict(env)):
        if event.get("stream") == "stdout":
            out.append(event["data"])
        elif event.get("stream") == "stderr":
            err.append(event["data"])
        elif "exit_code" in event:
            code = event["exit_code"]
    return code, "".join(out), "".join(err)


def _tail(text: str, limit: int = 500) -> str:
    return text.strip()[-limit:] or "(no output)"
