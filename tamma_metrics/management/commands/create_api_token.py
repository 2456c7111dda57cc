from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
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
        users = get_user_model().objects
        account = users.filter(username=user).first()
        if account is None and create_user:
            from django.contrib.auth.models import Group

            account = users.create_user(username=user)  # no password: token only
            account.groups.add(Group.objects.get_or_create(name=create_user)[0])
        if account is None:
            raise CommandError(f"No user named {user!r}.")
        if expires_days is not None and expires_days <= 0:
            raise CommandError("--expires-days must be positive.")
        expires = timezone.now() + timedelta(days=expires_days) if expires_days else None
        _, secret = ApiToken.create_for(account, name, expires)
        self.stdout.write(secret)
