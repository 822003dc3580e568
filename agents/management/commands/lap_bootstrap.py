from __future__ import annotations

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from agents.models import Agent
from agents.services import agent_create
from lapsite.state import KEYS_FILE
from pool.services import pool_ensure_schedules, pool_seed_default
from sandboxes.services import ensure_schedules

MARKER = "bootstrapped"
ADMIN = "admin"
DEMO_AGENT = "shell-agent"


class Command(BaseCommand):
    help = (
        "First-run set-up (idempotent): an admin user, the master key shown once, "
        "a shell demo agent, the periodic schedules and the default warm pool (2 shell)."
    )

    def handle(self, *args, **options) -> None:
        home = Path(settings.LAP_HOME)
        marker = home / MARKER
        with transaction.atomic():
            ensure_schedules()
            pool_ensure_schedules()
            pool_seed_default()
            password = self._ensure_admin()
            first_run = not marker.exists()
            if first_run and not Agent.objects.filter(name=DEMO_AGENT).exists():
                agent_create(user=None, name=DEMO_AGENT, harness_id="shell", prompt="")
        if password:
            self.stdout.write(f"admin user:  {ADMIN} / {password}   (shown only now)")
        if first_run:
            self.stdout.write(f"master key:  {settings.LAP_MASTER_KEY}   (shown only now)")
            self.stdout.write(f"demo agent:  {DEMO_AGENT} (harness shell)")
            marker.write_text("the master key and admin password were printed once\n")
        else:
            self.stdout.write(
                f"already bootstrapped; the master key is LAP_MASTER_KEY in {home / KEYS_FILE} "
                "(or the LAP_MASTER_KEY environment variable when set)"
            )

    def _ensure_admin(self) -> str | None:
        """Create the admin superuser if missing; return its password only when created."""
        users = get_user_model().objects
        if users.filter(username=ADMIN).exists():
            return None
        password = secrets.token_urlsafe(12)
        users.create_superuser(ADMIN, email="", password=password)
        return password
