"""The demo's tokens: one per role, rotated by each `make run` and kept in .run/."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from tamma_metrics.models import ApiToken
from tamma_metrics.roles import seed_roles

TOKEN_NAME = "make-run"


def rotate(username: str, role: str, path: Path) -> str:
    """Revoke the user's previous demo token, create a new one, write it to ``path``
    (readable by its owner only) and return it."""
    seed_roles()
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_unusable_password()  # it signs in with its token only
    user.save()
    user.groups.add(Group.objects.get(name=role))
    ApiToken.objects.filter(user=user, name=TOKEN_NAME, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    _, secret = ApiToken.create_for(user, TOKEN_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret
