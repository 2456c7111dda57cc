"""Who may see what: metric families as permission objects, and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.utils import timezone
from guardian.models import GroupObjectPermissionBase, UserObjectPermissionBase

if TYPE_CHECKING:
    # settings.AUTH_USER_MODEL as django-stubs resolves it for the settings mypy runs with.
    from django.contrib.auth.models import User

TOKEN_PREFIX = "tmm"  # recognisable in secret scanners and logs-to-be-scrubbed
LAST_USED_RESOLUTION = timedelta(minutes=1)


class MetricFamily(models.Model):
    """One catalogue family, or a pattern such as ``process_*`` covering runtime families.

    The django-guardian object permission ``view_metricfamily``, granted to a group
    (a role) or a user, decides who sees it. Rows are kept in sync on migrate.
    """

    name = models.CharField(
        max_length=200,
        unique=True,
        help_text="Catalogue name without prefix, or a pattern ending in *.",
    )
    kind = models.CharField(max_length=16, blank=True)
    audience = models.CharField(max_length=16, blank=True)
    help_text = models.CharField(max_length=300, blank=True)
    max_series = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Label combinations this family may have (blank: "
        "the DEFAULT_MAX_SERIES setting). Past it, events go "
        "to one overflow series.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "metric family"
        verbose_name_plural = "metric families"

    def __str__(self) -> str:
        return self.name


class MetricFamilyUserPermission(UserObjectPermissionBase):
    # Direct foreign keys: guardian joins them without the generic object_pk cast.
    content_object = models.ForeignKey(MetricFamily, on_delete=models.CASCADE)


# The object permission that lets a user or a role see a family.
VIEW_PERMISSION = "view_metricfamily"


class MetricFamilyGroupPermission(GroupObjectPermissionBase):
    content_object = models.ForeignKey(MetricFamily, on_delete=models.CASCADE)


def digest(secret: str) -> str:
    """SHA-256 of a token: enough for 32 random bytes, where a slow hash buys nothing."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, user__is_active=True).exclude(
            expires_at__lte=now
        )


class ApiToken(models.Model):
    """A bearer token acting as its user (and the user's groups). Only a digest is stored."""

    name = models.CharField(max_length=100, help_text="What uses it, e.g. 'prometheus-prod'.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tamma_api_tokens"
    )
    prefix = models.CharField(
        max_length=16,
        unique=True,
        editable=False,
        help_text="Public part, for lookup and for telling tokens apart.",
    )
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"
        permissions = [
            # A token acts as its user: creating one for someone else is acting as them.
            ("create_token_for_others", "Can create API tokens for other users"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({TOKEN_PREFIX}_{self.prefix}_…)"

    @classmethod
    def create_for(
        cls, user: User, name: str, expires_at: datetime | None = None
    ) -> tuple[ApiToken, str]:
        """Create a token; the secret is returned once and never stored."""
        token = cls(user=user, name=name, expires_at=expires_at)
        return token, token.set_new_secret()

    def set_new_secret(self) -> str:
        """Give the token a fresh secret, save it, and return the full token string."""
        self.prefix = secrets.token_hex(4)
        secret = secrets.token_urlsafe(32)  # 32 random bytes
        self.digest = digest(secret)
        self.save()
        return f"{TOKEN_PREFIX}_{self.prefix}_{secret}"

    def touch(self) -> None:
        """Record use at most once a minute, so scrapes do not write on every request."""
        now = timezone.now()
        if self.last_used_at is None or now - self.last_used_at >= LAST_USED_RESOLUTION:
            type(self).objects.filter(pk=self.pk).update(last_used_at=now)
            self.last_used_at = now
