from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from vault import crypto


def test_round_trip_and_ciphertext_hides_value():
    token = crypto.encrypt("hunter2")
    assert "hunter2" not in token
    assert crypto.decrypt(token) == "hunter2"


def test_rotation_encrypts_with_newest_and_decrypts_with_any(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.LAP_ENCRYPTION_KEYS = [old]
    legacy = crypto.encrypt("v")
    settings.LAP_ENCRYPTION_KEYS = [new, old]
    assert crypto.decrypt(legacy) == "v"
    fresh = crypto.encrypt("v")
    settings.LAP_ENCRYPTION_KEYS = [new]
    assert crypto.decrypt(fresh) == "v"
    with pytest.raises(crypto.DecryptionFailed):
        crypto.decrypt(legacy)


def test_maps():
    stored = crypto.encrypt_map({"A": "1", "B": ""})
    assert set(stored) == {"A", "B"}
    assert crypto.decrypt_map(stored) == {"A": "1", "B": ""}
