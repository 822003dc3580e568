"""Encryption at rest for secret values (agent and session env vars, runner tokens).

``settings.LAP_ENCRYPTION_KEYS`` lists Fernet keys, newest first: values are
encrypted with the newest key and decrypted with any of them, so a key can be
rotated by prepending a new one and re-encrypting at leisure.
"""

from __future__ import annotations

from collections.abc import Mapping

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from lapsite.errors import LapError


class DecryptionFailed(LapError):
    """A stored value cannot be decrypted with any configured key (a key was removed)."""

    status = 500
    code = "decryption_failed"
    default_message = "a stored secret cannot be decrypted with the configured keys"


def _fernet() -> MultiFernet:
    # Built per call: cheap, and it follows settings overrides in tests without a cache.
    return MultiFernet([Fernet(key) for key in settings.LAP_ENCRYPTION_KEYS])


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Raises ``DecryptionFailed`` when no configured key opens ``token``."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken as error:
        raise DecryptionFailed() from error


def encrypt_map(values: Mapping[str, str]) -> dict[str, str]:
    fernet = _fernet()
    return {name: fernet.encrypt(value.encode()).decode() for name, value in values.items()}


def decrypt_map(stored: Mapping[str, str]) -> dict[str, str]:
    return {name: decrypt(token) for name, token in stored.items()}


def rotate(token: str) -> str:
    """``token`` re-encrypted with the newest key (``DecryptionFailed`` if no key opens it)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as error:
        raise DecryptionFailed() from error
