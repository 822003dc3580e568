"""What every LAP model admin shares."""

from __future__ import annotations

from django.db.models.constants import LOOKUP_SEP

# Model fields that hold a secret, encrypted (env_vars' values, runner_token, sealing_key) or
# hashed (an API token's digest). The admin never shows them.
SECRET_FIELDS = frozenset({"env_vars", "runner_token", "sealing_key", "digest"})


class SecretLookupsRefused:
    """Refuses change-list filters that go through a secret field (``?runner_token__startswith=``,
    ``?agent__env_vars__icontains=``) with a 400. Django allows lookups on a model's own
    fields by default, and answering them would let a staff user test the stored bytes piece
    by piece, although the admin never shows them."""

    def lookup_allowed(self, lookup: str, value: str, request) -> bool:
        if SECRET_FIELDS.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]
