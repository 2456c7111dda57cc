"""Admin for the domain records: filters and search that stay fast at 1M issues."""

from __future__ import annotations

from django.contrib import admin

from .models import Approval, AutonomousLoop, Escalation, Issue, PullRequest


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
    readonly_fields = ("created_at",)


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


@admin.register(Approval)
class ApprovalAdmin(LargeTableAdmin):
    list_display = (
        "id",
        "issue",
        "approval_type",
        "priority",
        "status",
        "requested_at",
        "decided_at",
    )
    list_filter = ("status", "approval_type", "priority")
    search_fields = ("issue__repository", "issue__external_id")
    list_select_related = ("issue",)
    raw_id_fields = ("issue",)


@admin.register(Escalation)
class EscalationAdmin(LargeTableAdmin):
    list_display = (
        "id",
        "escalation_type",
        "severity",
        "component",
        "reason",
        "issue",
        "created_at",
    )
    list_filter = ("escalation_type", "severity", "component")
    search_fields = ("component", "reason", "issue__repository")
    list_select_related = ("issue",)
    raw_id_fields = ("issue",)


@admin.register(AutonomousLoop)
class AutonomousLoopAdmin(admin.ModelAdmin):
    list_display = ("name", "mode", "environment", "status", "last_heartbeat")
    list_filter = ("mode", "environment", "status")
    search_fields = ("name",)
