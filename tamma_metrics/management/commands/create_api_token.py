from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from tamma_metrics.models import ApiToken


class Command(BaseCommand):
    help = "Create a bearer token for a user and print it once (only a digest is stored)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--user", required=True, help="Username the token acts as.")
        parser.add_argument("--name", default="cli", help="What uses the token.")
        parser.add_argument("--expires-days", type=int, default=None)
        parser.add_argument(
            "--create-user",
            metavar="GROUP",
            default=None,
            help="Create the user if missing, as a member of this role.",
        )

    def handle(
        self,
        *args,
        user: str,
        name: str,
        expires_days: int | None,
        create_user: str | None,
        **options,
    ) -> None:
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be positive.")
        users = get_user_model().objects
        account = users.filter(username=user).first()
        if account is None and create_user:
            # Only an existing role: a typo would make an empty group whose token sees
            # nothing (403 on every scrape).
            role = Group.objects.filter(name=create_user).first()
            if role is None:
                roles = ", ".join(Group.objects.order_by("name").values_list("name", flat=True))
                raise CommandError(
                    f"No role named {create_user!r}. Roles: {roles or 'none'} "
                    "(python manage.py seed_roles creates the presets)."
                )
            with transaction.atomic():
                account = users.create_user(username=user)  # no password: token only
                account.groups.add(role)
        if account is None:
            raise CommandError(f"No user named {user!r}.")
        expires = timezone.now() + timedelta(days=expires_days) if expires_days else None
        _, secret = ApiToken.create_for(account, name, expires)
        self.stdout.write(secret)
