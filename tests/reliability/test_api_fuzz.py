"""API fuzzing from the live OpenAPI schema (schemathesis): no 5xx, and every response —
status, content type, headers, body — as the schema documents it, with and without credentials.

schemathesis reads ``/api/schema/`` from the running platform, so every endpoint a branch adds
is fuzzed once it is in the schema. Its stateful phase chains the operations through the links
it infers (create an agent, start a session on it, read, exec, stop), so real sandboxes are
made and stopped along the way.

Left out on purpose: ``negative_data_rejection`` (DRF accepts ``0`` for ``false``, a number
for a string and ``?status=`` as "no filter" — lenient, never lossy), ``positive_data_acceptance``
(schema-valid is not always meaningful: ``argv: [""]`` is a clear 400) and ``use_after_free``
(a stopped session stays readable by design: its recording and records outlive the sandbox).
The operations that follow a harness's turn — ``message``, ``message_stream`` and ``events`` —
are left out of the authenticated run (``TURN_OPERATIONS``): agents made without a
``harness_id`` run opencode, this platform has no model behind it, so a turn lasts until the
harness gives up, and every such case held the run for the whole request timeout (the run
outgrew its budget). ``tests/e2e/test_api_harnesses.py`` drives them against a fake model
gateway, and ``test_hostile_input`` sends bad bodies to every operation.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.reliability.sizes import FULL, sized

ST = str(Path(sys.executable).with_name("st"))
BUDGET = sized(300, 1800)  # seconds for one schemathesis run
RESPONSE_CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
TURN_OPERATIONS = ["sessions_message", "sessions_message_stream", "sessions_events"]
AUTHENTICATED_CHECKS = [
    *RESPONSE_CHECKS,
    "missing_required_header",
    "unsupported_method",
    "ignored_auth",
    "ensure_resource_availability",
]


@pytest.fixture(scope="module")
def platform(start_platform):
    # A small pool: the fuzzer may set any target up to LAP_POOL_MAX.
    return start_platform(LAP_POOL_MAX="1")


@pytest.fixture(scope="module")
def schema_file(platform, tmp_path_factory) -> Path:
    """The schema as the platform serves it (fetched once: a wrong credential would get 401
    for the schema itself, before any operation is tried)."""
    reply = httpx.get(f"{platform.url}/api/schema/", timeout=30)
    assert reply.status_code == 200, reply.text
    path = tmp_path_factory.mktemp("schema") / "openapi.yaml"
    path.write_bytes(reply.content)
    return path


def fuzz(
    schema_file: Path, url: str, *, checks, phases: str, examples: int, headers=(), exclude=()
) -> None:
    """Run schemathesis against the platform at ``url`` (leaving out the operations whose ids
    are in ``exclude``); fails with its report."""
    argv = [
        ST,
        "run",
        str(schema_file),
        f"--url={url}",
        "--no-color",
        "--generation-database=none",
        f"--phases={phases}",
        f"--checks={','.join(checks)}",
        f"--max-examples={examples}",
        "--request-timeout=60",
        *(arg for header in headers for arg in ("-H", header)),
        *(arg for operation in exclude for arg in ("--exclude-operation-id", operation)),
    ]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=BUDGET,
        check=False,
        cwd=schema_file.parent,  # st keeps a cache directory in its working directory
    )
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-12000:]
    assert "Tested:" in report, report[-4000:]


@pytest.mark.timeout(BUDGET + 60)
def test_fuzz_with_the_master_key(platform, schema_file):
    fuzz(
        schema_file,
        platform.url,
        checks=AUTHENTICATED_CHECKS,
        phases="examples,coverage,fuzzing,stateful",
        examples=sized(10, 200),
        headers=[f"Authorization: Bearer {platform.key}"],
        exclude=TURN_OPERATIONS,
    )


@pytest.mark.timeout(BUDGET + 60)
@pytest.mark.parametrize(
    "headers",
    [[], ["Authorization: Bearer not-a-key"], ["Authorization: Basic bGFwOmxhcA=="]],
    ids=["none", "wrong-bearer", "basic"],
)
def test_fuzz_without_valid_credentials(platform, schema_file, headers):
    fuzz(
        schema_file,
        platform.url,
        checks=RESPONSE_CHECKS,
        phases="coverage,fuzzing" if FULL else "fuzzing",
        examples=sized(3, 50),
        headers=headers,
    )
