from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.models import ApiToken
from accounts.services import api_token_issue


class Command(BaseCommand):
    help = "Create an API token for USERNAME (creating the user if needed) and print it once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--rotate", action="store_true", help="replace the user's existing token"
        )

    def handle(self, *args, username: str, rotate: bool, **options) -> None:
        user, created = get_user_model().objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        if ApiToken.objects.filter(user=user).exists() and not rotate:
            raise CommandError(
                f"{username} already has a token (shown only when made); --rotate replaces it"
            )
        self.stdout.write(api_token_issue(user))
        self.stderr.write(
            f"API token for {username}{' (new user)' if created else ''}; it is not shown again. "
            "Use it as: Authorization: Bearer <token>"
        )
