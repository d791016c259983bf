import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from tests.factories import UserFactory

PASSWORD = "pass-word-123"


@pytest.fixture(autouse=True)
def _clean_cache():
    """Each test starts with no cached values or counters under the test key prefix."""
    cache.delete_pattern("*")
    yield


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def auth_client(user):
    client = APIClient()
    client.force_authenticate(user)
    return client
