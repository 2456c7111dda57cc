"""Ids of events received through the ingest API, kept to count each event once."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.db import models
from django.utils import timezone


class IngestedEvent(models.Model):
    """An ``event_id`` a caller sent, remembered for the deduplication window.

    Ids are unique across all callers: a retry that reaches the API under another
    worker's token is the same event. ``user`` says who reported it first.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    event_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=32)
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(fields=["event_id"], name="tamma_ingested_event_id_unique")
        ]
        indexes = [models.Index(fields=["received_at"], name="tamma_ingested_at")]
        permissions = [("add_event", "Can report events through the ingest API")]
        default_permissions = ("view", "delete")

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id}"


class WebhookDelivery(models.Model):
    """A webhook delivery id a platform sent (GitHub's ``X-GitHub-Delivery``, GitLab's
    ``X-Gitlab-Event-UUID``): a redelivery of the same id changes and counts nothing."""

    platform = models.CharField(max_length=32)
    delivery_id = models.CharField(max_length=128)
    event = models.CharField(max_length=64)
    outcome = models.CharField(max_length=16, default="applied")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "delivery_id"], name="tamma_webhook_delivery_unique"
            )
        ]
        indexes = [models.Index(fields=["received_at"], name="tamma_webhook_received")]
        default_permissions = ("view", "delete")

    def __str__(self) -> str:
        return f"{self.platform} {self.event} {self.delivery_id}"


class WebhookSecret(models.Model):
    """A webhook secret a platform signs or authenticates its deliveries with, kept by
    people in the admin (beside ``WEBHOOK_SECRETS`` in settings; either is accepted, so a
    secret can be rotated by adding the new one before removing the old).

    GitLab sends its token as it is: only its SHA-256 digest is stored, and a delivery's
    token is compared with it as a digest. GitHub signs with an HMAC, which needs the
    secret itself: that one is stored as given (the database must be guarded as the
    settings are), never shown again and never logged."""

    PLATFORMS = (("github", "GitHub"), ("gitlab", "GitLab"))

    platform = models.CharField(max_length=16, choices=PLATFORMS)
    name = models.CharField(max_length=100, help_text="Which webhook this is, for people.")
    secret = models.CharField(max_length=256, blank=True, default="", editable=False)
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["platform", "name"]

    def __str__(self) -> str:
        return f"{self.get_platform_display()}: {self.name}"

    @staticmethod
    def digest_of(value: str) -> str:
        return hashlib.sha256(value.encode()).hexdigest()

    def set_value(self, value: str) -> None:
        """Keep ``value``: its digest always, the value itself only where it is needed."""
        self.digest = self.digest_of(value)
        self.secret = value if self.platform == "github" else ""

    @property
    def fingerprint(self) -> str:
        return self.digest[:8]
