from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from vault import crypto
from vault.services import vault_reencrypt_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored secret with the newest key of LAP_ENCRYPTION_KEYS "
        "(after prepending a new key); older keys can then be removed."
    )

    def handle(self, *args, **options) -> None:
        try:
            counts = vault_reencrypt_all()
        except crypto.DecryptionFailed as error:
            raise CommandError(error.message) from error
        for kind, count in counts.items():
            self.stdout.write(f"{kind}: {count} re-encrypted")
