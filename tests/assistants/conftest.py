"""Assistant fixtures: users on a plan that allows assistants, and assistants made through the
service (the same checks the API runs)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from assistants.services import assistant_create
from tests.factories import UserFactory, plan


@pytest.fixture
def pro_user(db):
    return UserFactory(plan=plan("pro"))


@pytest.fixture
def pro_client(pro_user):
    client = APIClient()
    client.force_authenticate(pro_user)
    return client


@pytest.fixture
def client_for():
    def make(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def make_assistant():
    def make(owner, **fields):
        fields.setdefault("name", "Helper")
        return assistant_create(user=owner, **fields)

    return make
