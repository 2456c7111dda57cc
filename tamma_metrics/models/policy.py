"""Label policy: vocabularies and caps people edit in the admin, and what was admitted."""

from __future__ import annotations

from django.db import models


class LabelPolicy(models.Model):
    """How one label's values are treated, for every family or for one family.

    Closed labels keep only their allowed values and fold the rest to ``fold_value``;
    free-form labels admit new values until ``max_values`` distinct ones exist.
    """

    label = models.CharField(max_length=64)
    family = models.CharField(
        max_length=200,
        blank=True,
        help_text="Catalogue name of one family, or blank for every family.",
    )
    closed = models.BooleanField(
        default=True, help_text="Closed: only the allowed values. Open: free-form."
    )
    allowed_values = models.TextField(blank=True, help_text="One value per line (closed labels).")
    max_values = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Distinct values a free-form label may take "
        "(blank: the DEFAULT_MAX_VALUES setting).",
    )
    fold_value = models.CharField(max_length=32, default="other")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["label", "family"]
        verbose_name_plural = "label policies"
        constraints = [
            models.UniqueConstraint(fields=["label", "family"], name="tamma_label_policy_unique")
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.family})" if self.family else self.label

    @property
    def values(self) -> frozenset[str]:
        return frozenset(v.strip().lower() for v in self.allowed_values.splitlines() if v.strip())


class Admission(models.Model):
    """A label combination admitted into a family, or a value admitted into a free label.

    Shared by every process, so caps hold for the deployment, not per worker.
    """

    scope = models.CharField(max_length=240)  # "series:<family>" or "value:<label>"
    key = models.CharField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="tamma_admission_unique")
        ]
        indexes = [models.Index(fields=["scope"], name="tamma_admission_scope")]

    def __str__(self) -> str:
        return f"{self.scope}: {self.key}"
