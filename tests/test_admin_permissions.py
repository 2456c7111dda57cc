"""The admin cannot be used to gain more than one has: tokens, grants, object permissions.

Each admin path that writes tokens, family grants or permissions is tried by a staff
user holding only that model's permissions, as an attacker with a staff account would.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from guardian.shortcuts import assign_perm

from tamma_metrics import access
from tamma_metrics.models import ApiToken, LabelPolicy, MetricFamily
from tamma_metrics.roles import PRODUCT_MANAGER, seed_roles

pytestmark = pytest.mark.django_db


def staff(username: str, *codenames: str) -> tuple[User, Client]:
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return user, client


TOKEN_PERMS = ("add_apitoken", "change_apitoken", "view_apitoken", "delete_apitoken")


def add_token(client: Client, owner: User, name: str = "t"):
    return client.post("/admin/tamma_metrics/apitoken/add/", {"name": name, "user": owner.pk})


def test_staff_with_token_permissions_cannot_create_a_token_for_the_superuser():
    root = User.objects.create_superuser("root", password="x")
    user, client = staff("tokens-only", *TOKEN_PERMS)
    response = add_token(client, root, "steal")
    assert response.status_code == 200  # the form again, with its error
    assert "user" in response.context["adminform"].form.errors
    assert not ApiToken.objects.filter(user=root).exists()
    # Its own token is fine, and shown once.
    response = add_token(client, user, "mine")
    assert response.status_code == 302
    assert ApiToken.objects.get(user=user).name == "mine"


def test_a_tokens_owner_cannot_be_changed_to_someone_else():
    root = User.objects.create_superuser("root", password="x")
    user, client = staff("tokens-only", *TOKEN_PERMS)
    token, _ = ApiToken.create_for(user, "mine")
    url = f"/admin/tamma_metrics/apitoken/{token.pk}/change/"
    response = client.post(url, {"name": "mine", "user": root.pk})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.user == user


def test_staff_see_and_revoke_only_their_own_tokens():
    other = User.objects.create_user("other")
    theirs, _ = ApiToken.create_for(other, "theirs")
    user, client = staff("tokens-only", *TOKEN_PERMS)
    ApiToken.create_for(user, "mine")
    page = client.get("/admin/tamma_metrics/apitoken/")
    assert [t.name for t in page.context["cl"].result_list] == ["mine"]
    assert client.get(f"/admin/tamma_metrics/apitoken/{theirs.pk}/change/").status_code == 302
    client.post(
        "/admin/tamma_metrics/apitoken/",
        {"action": "revoke", "_selected_action": [theirs.pk]},
    )
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_the_explicit_permission_allows_tokens_for_others():
    other = User.objects.create_user("other")
    _, client = staff("token-admin", *TOKEN_PERMS, "create_token_for_others")
    assert add_token(client, other, "for-other").status_code == 302
    assert ApiToken.objects.get(user=other).name == "for-other"
    assert access.may_create_token_for(User.objects.get(username="token-admin"), other)


def test_grants_are_limited_to_families_the_granter_sees():
    seed_roles()
    role = Group.objects.get(name=PRODUCT_MANAGER)
    user, client = staff("granter", "change_metricfamily", "view_metricfamily")
    seen = MetricFamily.objects.get(name="queue_depth")
    unseen = MetricFamily.objects.get(name="ai_cost_usd_total")
    assign_perm(access.VIEW_PERMISSION, user, seen)
    user.groups.add(role)  # through the role, a grant would reach the granter itself
    role.metricfamilygrouppermission_set.filter(content_object__in=[seen, unseen]).delete()

    def granted() -> set[str]:
        rows = role.metricfamilygrouppermission_set.values_list("content_object__name", flat=True)
        return set(rows)

    def grant(*families: MetricFamily) -> list[str]:
        data = {"action": "grant_to_role", "role": role.pk, "index": 0}
        data["_selected_action"] = [family.pk for family in families]
        response = client.post("/admin/tamma_metrics/metricfamily/", data, follow=True)
        return [str(message) for message in response.context["messages"]]

    before = granted()
    assert grant(seen, unseen) == [
        "You can grant only families you can see yourself: nothing was granted."
    ]
    assert granted() == before
    assert grant(seen) == [f"1 families granted to {PRODUCT_MANAGER}."]
    assert granted() == before | {"queue_depth"}


def test_object_permission_pages_are_for_superusers_only():
    family = MetricFamily.objects.get(name="queue_depth")
    _, client = staff("granter", "change_metricfamily", "view_metricfamily")
    base = f"/admin/tamma_metrics/metricfamily/{family.pk}/permissions/"
    assert client.get(base).status_code == 403
    target = User.objects.get(username="granter")
    assert client.get(f"{base}user-manage/{target.pk}/").status_code == 403
    root = Client()
    root.force_login(User.objects.create_superuser("root", password="x"))
    assert root.get(base).status_code == 200


def test_label_policy_edits_need_the_policy_permission():
    policy = LabelPolicy.objects.exclude(max_values=None).first()
    before = (policy.max_values, policy.fold_value)
    _, client = staff("viewer", "view_labelpolicy")
    url = f"/admin/tamma_metrics/labelpolicy/{policy.pk}/change/"
    assert client.get(url).status_code == 200  # read-only for a viewer
    response = client.post(url, {"label": policy.label, "max_values": 1, "fold_value": "x"})
    assert response.status_code == 403
    policy.refresh_from_db()
    assert (policy.max_values, policy.fold_value) == before
    _, editor = staff("editor", "view_labelpolicy", "change_labelpolicy")
    page = editor.get(url)
    data = {name: page.context["adminform"].form[name].value() for name in ("label", "family",
            "allowed_values", "closed", "max_values", "fold_value")}  # fmt: skip
    data = {key: value for key, value in data.items() if value is not None and value is not False}
    data["max_values"] = before[0] + 1
    assert editor.post(url, data).status_code == 302
    policy.refresh_from_db()
    assert policy.max_values == before[0] + 1
