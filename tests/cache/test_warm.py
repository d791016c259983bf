"""Warm-up: on login (a real Celery worker), by command and for the most read documents."""

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from openspark.core.cache import cache_purge, stats_get
from openspark.core.cache.warmup import cache_warm_logins_run, login_warm_schedule
from tests.cache import warmers
from tests.cache.conftest import ns_stats, wait_for
from tests.conftest import PASSWORD


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_login_warms_the_profile_in_a_worker(celery_worker, user):
    response = Client().post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    assert wait_for(lambda: ns_stats(stats_get(), "user_profile")["warmed"] >= 1), (
        celery_worker.log()
    )
    reader = APIClient()
    reader.force_authenticate(user)
    assert reader.get("/api/v1/me/").json()["username"] == user.username
    profile = ns_stats(stats_get(), "user_profile")
    assert (profile["hits"], profile["misses"]) == (1, 0)  # the first read was already warm


@pytest.mark.django_db
def test_command_warms_users(user, other_user):
    call_command("cache_warm", user=[user.id])
    for who in (user, other_user):
        reader = APIClient()
        reader.force_authenticate(who)
        reader.get("/api/v1/me/")
    profile = ns_stats(stats_get(), "user_profile")
    assert (profile["warmed"], profile["hits"], profile["misses"]) == (1, 1, 1)


@pytest.mark.django_db
def test_command_warms_the_most_read_documents(settings, capsys):
    settings.CACHE_DOCUMENT_WARMERS = ["tests.cache.warmers.document_warm"]
    for document_id, reads in ((1, 3), (2, 1), (3, 2)):
        for _ in range(reads):
            warmers.document_text(document_id=document_id)
    cache_purge("document_content")
    warmers.computed.clear()

    call_command("cache_warm", documents=True, limit=2)
    assert "documents=2" in capsys.readouterr().out
    assert sorted(warmers.computed) == [1, 3]
    warmers.document_text(document_id=1)
    warmers.document_text(document_id=3)
    warmers.document_text(document_id=2)
    assert sorted(warmers.computed) == [1, 2, 3]  # only the cold one was computed again


@pytest.mark.django_db
def test_warm_skips_inactive_and_unknown_users(user):
    user.is_active = False
    user.save()
    call_command("cache_warm", user=[user.id, 10**9])
    assert ns_stats(stats_get(), "user_profile")["warmed"] == 0


@pytest.mark.django_db
def test_logins_coalesce_into_one_warm_up_task(user, other_user):
    """A burst of logins queues one task, which warms everyone who logged in."""
    assert login_warm_schedule(user_id=user.id) is True
    assert login_warm_schedule(user_id=other_user.id) is False  # a task is already queued
    assert cache_warm_logins_run() == 2
    assert ns_stats(stats_get(), "user_profile")["warmed"] == 2
    assert login_warm_schedule(user_id=user.id) is True  # the task ran: the next login queues
