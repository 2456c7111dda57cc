"""Admin: domain records (fast at 1M issues), family permissions per role, API tokens,
webhook secrets."""

from __future__ import annotations

import secrets
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from guardian.admin import GuardedModelAdmin
from guardian.shortcuts import remove_perm

from . import access, roles
from .models import (
    ApiToken,
    Approval,
    AutonomousLoop,
    Deployment,
    Escalation,
    Incident,
    Issue,
    LabelPolicy,
    MetricFamily,
    PullRequest,
    WebhookSecret,
)
from .models.access import TOKEN_PREFIX


class LargeTableAdmin(admin.ModelAdmin):
    # COUNT(*) over a million rows on every page view is not worth the exact total.
    show_full_result_count = False
    list_per_page = 50


@admin.register(Issue)
class IssueAdmin(LargeTableAdmin):
    list_display = (
        "__str__",
        "issue_type",
        "provider",
        "platform",
        "priority",
        "status",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "provider", "platform", "issue_type", "priority", "complexity")
    search_fields = ("repository", "external_id", "title")
    date_hierarchy = "created_at"
    # observed_at: the newest observation the state API applied (older ones are stale).
    readonly_fields = ("created_at", "observed_at")


@admin.register(PullRequest)
class PullRequestAdmin(LargeTableAdmin):
    list_display = (
        "__str__",
        "issue",
        "actor",
        "status",
        "merge_strategy",
        "created_at",
        "merged_at",
    )
    list_filter = ("status", "platform", "actor", "merge_strategy")
    search_fields = ("repository", "number")
    list_select_related = ("issue",)
    raw_id_fields = ("issue",)
    readonly_fields = ("observed_at",)


@admin.register(Approval)
class ApprovalAdmin(LargeTableAdmin):
    list_display = (
        "id",
        "issue",
        "external_id",
        "approval_type",
        "priority",
        "status",
        "requested_at",
        "decided_at",
    )
    list_filter = ("status", "approval_type", "priority")
    search_fields = ("issue__repository", "issue__external_id", "external_id")
    list_select_related = ("issue",)
    raw_id_fields = ("issue",)
    readonly_fields = ("observed_at",)


@admin.register(Escalation)
class EscalationAdmin(LargeTableAdmin):
    list_display = (
        "id",
        "external_id",
        "escalation_type",
        "severity",
        "component",
        "reason",
        "issue",
        "created_at",
    )
    list_filter = ("escalation_type", "severity", "component")
    search_fields = ("external_id", "component", "reason", "issue__repository")
    list_select_related = ("issue",)
    raw_id_fields = ("issue",)
    readonly_fields = ("observed_at",)


@admin.register(Deployment)
class DeploymentAdmin(LargeTableAdmin):
    list_display = (
        "__str__",
        "platform",
        "environment",
        "status",
        "commit_sha",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "platform", "environment")
    search_fields = ("repository", "external_id", "commit_sha")
    date_hierarchy = "started_at"
    raw_id_fields = ("pull_requests",)
    readonly_fields = ("observed_at",)


@admin.register(Incident)
class IncidentAdmin(LargeTableAdmin):
    list_display = (
        "__str__",
        "platform",
        "severity",
        "status",
        "opened_at",
        "resolved_at",
        "deployment",
        "attributed",
    )
    list_filter = ("status", "severity", "platform", "attributed")
    search_fields = ("repository", "external_id")
    list_select_related = ("deployment",)
    raw_id_fields = ("deployment",)
    readonly_fields = ("observed_at",)


@admin.register(AutonomousLoop)
class AutonomousLoopAdmin(admin.ModelAdmin):
    list_display = ("name", "mode", "environment", "status", "last_heartbeat")
    list_filter = ("mode", "environment", "status")
    search_fields = ("name",)


class GrantForm(ActionForm):
    role = forms.ModelChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        help_text="Role for the grant action.",
    )


@admin.register(MetricFamily)
class MetricFamilyAdmin(GuardedModelAdmin):
    """Rows are synced from the catalogue; people edit who may see them."""

    list_display = ("name", "kind", "audience", "max_series", "roles")
    list_editable = ("max_series",)
    list_filter = ("audience", "kind")
    search_fields = ("name", "help_text")
    readonly_fields = ("name", "kind", "audience", "help_text")
    action_form = GrantForm
    actions = ["grant_to_role", "revoke_from_role"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super().get_queryset(request).prefetch_related("metricfamilygrouppermission_set__group")
        )

    @admin.display(description="Roles that see it")
    def roles(self, obj: MetricFamily) -> str:
        return ", ".join(sorted({p.group.name for p in obj.metricfamilygrouppermission_set.all()}))

    def _role(self, request: HttpRequest) -> Group | None:
        try:
            role = GrantForm.base_fields["role"].clean(request.POST.get("role"))
        except forms.ValidationError:
            role = None
        if role is None:
            self.message_user(request, "Choose a role first.", messages.ERROR)
        return role

    @admin.action(description="Grant selected families to a role")
    def grant_to_role(self, request: HttpRequest, queryset: QuerySet) -> None:
        if role := self._role(request):
            families = list(queryset)
            if not access.may_grant(request.user, families):
                self.message_user(
                    request,
                    "You can grant only families you can see yourself: nothing was granted.",
                    messages.ERROR,
                )
                return
            added = roles.grant(role, families)
            self.message_user(request, f"{added} families granted to {role.name}.")

    # guardian's object-permission pages assign any permission to any user or group:
    # superusers only, where the grant action above checks what is granted.
    def obj_perms_manage_view(self, request: HttpRequest, object_pk: str) -> Any:
        self._superuser_only(request)
        return super().obj_perms_manage_view(request, object_pk)

    def obj_perms_manage_user_view(self, request: HttpRequest, object_pk: str, user_id: int) -> Any:
        self._superuser_only(request)
        return super().obj_perms_manage_user_view(request, object_pk, user_id)

    def obj_perms_manage_group_view(
        self, request: HttpRequest, object_pk: str, group_id: int
    ) -> Any:
        self._superuser_only(request)
        return super().obj_perms_manage_group_view(request, object_pk, group_id)

    @staticmethod
    def _superuser_only(request: HttpRequest) -> None:
        if not request.user.is_superuser:
            raise PermissionDenied

    @admin.action(description="Revoke selected families from a role")
    def revoke_from_role(self, request: HttpRequest, queryset: QuerySet) -> None:
        if role := self._role(request):
            remove_perm(access.VIEW_PERMISSION, role, queryset)
            self.message_user(request, f"{queryset.count()} families revoked from {role.name}.")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "user",
        "display_prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("revoked_at", "expires_at")
    search_fields = ("name", "user__username", "prefix")
    readonly_fields = ("display_prefix", "created_at", "last_used_at")
    fields = (
        "name",
        "user",
        "expires_at",
        "revoked_at",
        "display_prefix",
        "created_at",
        "last_used_at",
    )
    raw_id_fields = ("user",)
    actions = ["revoke"]

    @admin.display(description="Prefix")
    def display_prefix(self, obj: ApiToken) -> str:
        return f"{TOKEN_PREFIX}_{obj.prefix}_…" if obj.prefix else "-"

    def _for_others(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or request.user.has_perm(
            "tamma_metrics.create_token_for_others"
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Who may not act for others manages its own tokens only.
        tokens = super().get_queryset(request)
        return tokens if self._for_others(request) else tokens.filter(user=request.user)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        # A token's owner never changes: the secret was handed to someone acting as it.
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "user") if obj is not None else fields

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user" and not self._for_others(request):
            kwargs["queryset"] = db_field.related_model.objects.filter(pk=request.user.pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not access.may_create_token_for(request.user, obj.user):
            raise PermissionDenied  # the form already refuses it; never rely on one check
        if change:
            super().save_model(request, obj, form, change)
            return
        secret = obj.set_new_secret()
        # Shown once: only the digest is stored, so it cannot be shown again.
        self.message_user(
            request,
            f"Token created. Copy it now, it will not be shown again: {secret}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} tokens revoked.")


class WebhookSecretForm(forms.ModelForm):
    value = forms.CharField(
        required=False,
        strip=False,
        max_length=256,
        widget=forms.PasswordInput(render_value=False),
        help_text="The secret set on the platform's webhook. Leave it empty for a new random "
        "one (shown once); when changing, empty keeps the current one.",
    )

    class Meta:
        model = WebhookSecret
        fields = ("platform", "name")


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    """Secrets are written, never read back: the list shows a fingerprint (the digest's
    first characters) to tell them apart."""

    form = WebhookSecretForm
    list_display = ("name", "platform", "fingerprint", "created_at", "last_used_at")
    list_filter = ("platform",)
    readonly_fields = ("fingerprint", "created_at", "last_used_at")

    def get_readonly_fields(self, request: HttpRequest, obj: WebhookSecret | None = None) -> Any:
        # The platform decides what is stored: it stays what the secret was made for.
        fields = super().get_readonly_fields(request, obj)
        return (*fields, "platform") if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: WebhookSecret, form: Any, change: bool) -> None:
        value = form.cleaned_data.get("value", "")
        generated = not value and not change
        if generated:
            value = secrets.token_urlsafe(32)
        if value:
            obj.set_value(value)
        super().save_model(request, obj, form, change)
        if generated:
            self.message_user(
                request,
                f"Secret created. Set it on the webhook now, it will not be shown again: {value}",
                messages.WARNING,
            )


@admin.register(LabelPolicy)
class LabelPolicyAdmin(admin.ModelAdmin):
    """Vocabularies and caps; every process applies an edit within POLICY_REFRESH_SECONDS."""

    list_display = (
        "label",
        "family",
        "closed",
        "vocabulary",
        "max_values",
        "fold_value",
        "updated_at",
    )
    list_filter = ("closed",)
    search_fields = ("label", "family", "allowed_values")
    list_editable = ("max_values", "fold_value")

    @admin.display(description="Allowed values")
    def vocabulary(self, obj: LabelPolicy) -> str:
        return ", ".join(sorted(obj.values)) if obj.closed else "(free-form)"
