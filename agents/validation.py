"""Input rules for agents and per-session env vars, shared by the API and the services.

Each check returns ``{field: [message, ...]}`` (empty when valid) so the API
can answer with field-level messages and services can refuse the same input
when it arrives from the admin or a management command.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from agents.harnesses import harness_ids
from sandboxes.limits import utf8_size
from sandboxes.registry import SANDBOX_ENV_NAMES

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_KEYS = 50
MAX_ENV_BYTES = 16 * 1024
MAX_RULES = 200
# The prompt reaches the harness in its env (AGENT_PROMPT), where Linux caps one string at
# 128 KiB with its "NAME=" (MAX_ARG_STRLEN), and in the runner's requests, capped at 1 MiB.
MAX_PROMPT_BYTES = 100_000
# Names the platform sets in a harness env, where a secret's stub would replace the value (the
# proxy, the CA bundle, PATH…): the reference platform's (sandboxes.services._harness_env;
# LITELLM_API_KEY is the vault's stub), every driver's, and LAP_* (LAP_SESSION_ID…).
# Case-sensitive, as env is.
RESERVED_ENV = SANDBOX_ENV_NAMES | {
    "REPO_URL",
    "BRANCH",
    "LITELLM_API_KEY",
    "LITELLM_API_BASE",
    "LITELLM_DEFAULT_MODEL",
    "AGENT_PROMPT",
    "PORT",
    "GIT_TOKEN",
}
RESERVED_PREFIX = "LAP_"
# What responses show instead of a secret value; carries nothing from the value.
SECRET_MASK = "••••••••"  # noqa: S105
_HOST = re.compile(r"^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$")
_DIGITS_AND_DOTS = re.compile(r"^[0-9.]+$")
_BRANCH = re.compile(r"^[^\s~^:?*\[\\]+$")

Errors = dict[str, list[str]]


def env_var_errors(env_vars: Mapping[str, str], *, field: str = "env_vars") -> Errors:
    problems: list[str] = []
    bad = sorted(name for name in env_vars if not ENV_NAME.match(name))
    if bad:
        problems.append(f"invalid names (must match {ENV_NAME.pattern}): {', '.join(bad)}")
    # A mask the update could not trace to a stored secret (a copied agent, a renamed key).
    masked = sorted(name for name, value in env_vars.items() if value == SECRET_MASK)
    if masked:
        problems.append(
            f"masks with no stored secret behind them (send the values): {', '.join(masked)}"
        )
    reserved = sorted(
        name for name in env_vars if name in RESERVED_ENV or name.startswith(RESERVED_PREFIX)
    )
    if reserved:
        problems.append(f"reserved names (set by the platform): {', '.join(reserved)}")
    if len(env_vars) > MAX_ENV_KEYS:
        problems.append(f"at most {MAX_ENV_KEYS} keys ({len(env_vars)} given)")
    size = sum(len(name.encode()) + len(value.encode()) for name, value in env_vars.items())
    if size > MAX_ENV_BYTES:
        problems.append(f"at most {MAX_ENV_BYTES} bytes of names and values ({size} given)")
    return {field: problems} if problems else {}


def rule_is_valid(rule: str) -> bool:
    """An egress rule: a host name, ``*.suffix`` wildcard, IP address or CIDR.

    Digits and dots alone are an IP address or nothing (no top-level domain is all digits):
    ``999.999.999.999`` is refused, and so is a shorthand such as ``127.1``, which the vault
    would read as 127.0.0.1 where ``host_is_covered`` sees a name.
    """
    try:
        ipaddress.ip_network(rule, strict=False)
    except ValueError:
        is_name = not _DIGITS_AND_DOTS.match(rule)
        return is_name and len(rule) <= 253 and bool(_HOST.match(rule))
    return True


def host_is_covered(host: str, rules: Iterable[str]) -> bool:
    """Whether every name ``host`` can stand for is allowed by one of ``rules``."""
    host = host.lower().rstrip(".")
    base = host.removeprefix("*.")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for rule in (rule.lower().rstrip(".") for rule in rules):
        if host == rule:
            return True
        if rule.startswith("*.") and base.endswith(rule[1:]):
            return True
        if address is not None:
            try:
                if address in ipaddress.ip_network(rule, strict=False):
                    return True
            except ValueError:
                continue
    return False


def _rule_list_errors(field: str, rules: list[str]) -> Errors:
    problems = [
        f"not a host, *.wildcard, IP or CIDR: {rule!r}" for rule in rules if not rule_is_valid(rule)
    ]
    if len(rules) > MAX_RULES:
        problems.append(f"at most {MAX_RULES} rules")
    return {field: problems} if problems else {}


def _env_var_hosts_errors(
    env_var_hosts: Mapping[str, list[str]], env_names: Iterable[str], allow_out: list[str]
) -> Errors:
    problems: list[str] = []
    names = set(env_names)
    for key, hosts in env_var_hosts.items():
        if key not in names:
            problems.append(f"{key}: not a key of env_vars")
        for host in hosts:
            if not rule_is_valid(host):
                problems.append(f"{key}: not a host: {host!r}")
            elif allow_out and not host_is_covered(host, allow_out):
                problems.append(f"{key}: host {host} is not covered by allow_out")
    return {"env_var_hosts": problems} if problems else {}


def _repo_url_errors(repo_url: str) -> Errors:
    if not repo_url:
        return {}
    try:
        parts = urlsplit(repo_url)
    except ValueError:  # a bracketed host that is not an IPv6 address: "https://[::1"
        return {"repo_url": ["must be an https:// URL"]}
    if parts.scheme != "https" or not parts.hostname:
        return {"repo_url": ["must be an https:// URL"]}
    if parts.username or parts.password:
        return {"repo_url": ["must not contain credentials; put the token in env_vars"]}
    return {}


def label_errors(field: str, value: str) -> Errors:
    """A name or title shown in lists, terminals and logs: no control or format characters
    (escape sequences, bidi overrides, NUL) and no lone surrogates."""
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in value):
        return {field: ["must not contain control characters"]}
    return {}


def _prompt_errors(prompt: str) -> Errors:
    size = utf8_size([prompt])
    if size > MAX_PROMPT_BYTES:
        return {"prompt": [f"at most {MAX_PROMPT_BYTES} bytes of UTF-8 ({size} given)"]}
    return {}


def _name_errors(name: str) -> Errors:
    # The name is a URL path segment (/agents/{name}); clients resolve "." and ".." away.
    if "/" in name:
        return {"name": ["must not contain '/'"]}
    if name in (".", ".."):
        return {"name": ["must not be '.' or '..'"]}
    try:
        uuid.UUID(name)
    except ValueError:
        return label_errors("name", name)
    return {"name": ["must not be a UUID (agents are looked up by id or name)"]}


def agent_errors(
    *,
    name: str,
    harness_id: str,
    prompt: str,
    repo_url: str,
    branch: str,
    env_vars: Mapping[str, str],
    env_var_hosts: Mapping[str, list[str]],
    allow_out: list[str],
    deny_out: list[str],
) -> Errors:
    """All problems with an agent's complete (merged) configuration."""
    errors: Errors = {}
    errors.update(_name_errors(name))
    if harness_id not in harness_ids():
        errors["harness_id"] = [
            f"unknown harness {harness_id!r}; known: {', '.join(harness_ids())}"
        ]
    errors.update(_prompt_errors(prompt))
    errors.update(_repo_url_errors(repo_url))
    if branch and (branch.startswith("-") or not _BRANCH.match(branch)):
        errors["branch"] = ["not a valid branch name"]
    errors.update(env_var_errors(env_vars))
    errors.update(_rule_list_errors("allow_out", allow_out))
    errors.update(_rule_list_errors("deny_out", deny_out))
    errors.update(_env_var_hosts_errors(env_var_hosts, env_vars, allow_out))
    return errors


def first_error(errors: Errors) -> str:
    field, messages = next(iter(errors.items()))
    return f"{field}: {messages[0]}"
