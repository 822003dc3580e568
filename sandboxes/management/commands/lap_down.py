from __future__ import annotations

from django.core.management.base import BaseCommand

from sandboxes.services import platform_down


class Command(BaseCommand):
    help = (
        "Stop every session and destroy every sandbox, the warm pool's too. Stopping the "
        "platform leaves them running (sessions survive a restart); run this, with the "
        "platform stopped, to leave nothing behind."
    )

    def handle(self, *args, **options) -> None:
        counts = platform_down()
        self.stdout.write(
            f"stopped {counts['sessions']} session(s), retired {counts['warm']} warm "
            f"sandbox(es), destroyed {counts['other']} other sandbox(es)"
        )
