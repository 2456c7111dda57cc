from django.core.management.base import BaseCommand

from tamma_metrics.roles import seed_roles


class Command(BaseCommand):
    help = "Create the roles prometheus, operator and product-manager with their families."

    def handle(self, *args, **options) -> None:
        for role, new in seed_roles().items():
            self.stdout.write(f"Role {role}: {new} family grants added.")
