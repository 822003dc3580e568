"""Interception records as a fake sidecar would report them, for the platform-side tests."""

from __future__ import annotations


def record_blocked(vault, host: str = "evil.example") -> None:
    """Make ``vault`` (a ``sidecar.control.Vault``) record a blocked credential to ``host``."""
    vault.record(
        method="GET",
        host=host,
        path="/x",
        decision="blocked",
        reason="credential_not_allowed_for_host",
        credentials=["GITHUB_TOKEN"],
        status=403,
        bytes_out=0,
        bytes_in=0,
        duration_ms=0.1,
    )
