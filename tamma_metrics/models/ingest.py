"""Ids of events received through the ingest API, kept to count each event once."""

from __future__ import annotations

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
