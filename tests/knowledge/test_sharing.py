"""Sharing a base by username must not tell which usernames exist: a name nobody has and a
name whose account cannot be shared with (inactive) get the same answer."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from knowledge.models import KnowledgeBase
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PLACEHOLDER = "<username>"


def _client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _answer(response, name: str) -> tuple[int, str]:
    """Status and body with the name the caller sent taken out."""
    return response.status_code, response.content.decode().replace(name, PLACEHOLDER)


def test_unknown_and_unshareable_usernames_get_the_same_answer(user, other_user):
    client = _client(user)
    inactive = UserFactory(username="quiet-one", is_active=False)
    unknown = "quiet-two"  # same length: no difference in the body but the name itself

    def create(name: str):
        payload = {"name": "Team", "visibility": "shared", "shared_with": [name]}
        return client.post("/api/v1/knowledge/bases/", payload, format="json")

    for_unknown, for_inactive = create(unknown), create(inactive.username)
    assert _answer(for_unknown, unknown) == _answer(for_inactive, inactive.username)
    assert for_unknown.status_code == 400
    error = for_unknown.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"] == {"shared_with": [f"These users cannot be shared with: {unknown}"]}
    assert not KnowledgeBase.objects.exists()

    # Changing who a base is shared with answers the same way.
    base = client.post("/api/v1/knowledge/bases/", {"name": "Mine"}, format="json").json()

    def share(name: str):
        payload = {"visibility": "shared", "shared_with": [name]}
        return client.patch(f"/api/v1/knowledge/bases/{base['id']}/", payload, format="json")

    assert _answer(share(unknown), unknown) == _answer(share(inactive.username), inactive.username)
    assert not KnowledgeBase.objects.get(id=base["id"]).shared_with.exists()

    # An active user is confirmed by the share succeeding: sharing needs it.
    assert share(other_user.username).status_code == 200
    assert list(KnowledgeBase.objects.get(id=base["id"]).shared_with.all()) == [other_user]
