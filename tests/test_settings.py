"""Production settings refuse to start without their secrets."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = {
    "SECRET_KEY": "x" * 50,
    "ALLOWED_HOSTS": "example.com",
    "DATABASE_URL": "postgres://u:p@db:5432/openspark",
    "REDIS_URL": "redis://redis:6379/0",
    "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587",  # signup verification links
}


def _load_production(env_overrides: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    env.update(env_overrides, DJANGO_SETTINGS_MODULE="openspark.settings.production")
    code = "from django.conf import settings; settings.SECRET_KEY; print('loaded', settings.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_production_refuses_without_each_secret(missing):
    result = _load_production({k: v for k, v in REQUIRED.items() if k != missing})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert missing in result.stderr


def test_production_loads_with_all_secrets():
    result = _load_production(REQUIRED)
    assert result.returncode == 0, result.stderr
    assert "loaded False" in result.stdout


def test_production_verifies_signup_emails_unless_turned_off():
    code = (
        "from django.conf import settings; "
        "print('verification', settings.ACCOUNT_EMAIL_VERIFICATION, settings.EMAIL_HOST)"
    )
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    env.update(REQUIRED, DJANGO_SETTINGS_MODULE="openspark.settings.production")

    def load(**overrides):
        return subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env={**env, **overrides},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    on = load()
    assert on.returncode == 0, on.stderr
    assert "verification True smtp.example.com" in on.stdout
    off = load(ACCOUNT_EMAIL_VERIFICATION="false", EMAIL_URL="")
    assert off.returncode == 0, off.stderr
    assert "verification False" in off.stdout


def _database_settings(env_overrides: dict) -> dict:
    code = (
        "import json; from django.conf import settings; d = settings.DATABASES['default']; "
        "print(json.dumps({'options': d.get('OPTIONS', {}), 'age': d.get('CONN_MAX_AGE', 0)}))"
    )
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    env.update(REQUIRED, DJANGO_SETTINGS_MODULE="openspark.settings.production", **env_overrides)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def test_postgres_uses_a_connection_pool_per_process_unless_turned_off():
    pooled = _database_settings({})
    assert pooled == {
        "options": {"pool": {"min_size": 1, "max_size": 10, "timeout": 30.0}},
        "age": 0,
    }
    sized = _database_settings({"DB_POOL_MAX_SIZE": "25", "DB_POOL_TIMEOUT": "5"})
    assert sized["options"]["pool"] == {"min_size": 1, "max_size": 25, "timeout": 5.0}
    unpooled = _database_settings({"DB_POOL_MAX_SIZE": "0"})
    assert unpooled == {"options": {}, "age": 60}


@pytest.mark.django_db(transaction=True)
def test_more_threads_than_pooled_connections_all_get_answers():
    """On PostgreSQL (the CI's second configuration) 3x the pool's size of threads query at
    once: they wait for a connection instead of failing. On SQLite there is no pool to test."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection, connections

    if "pool" not in connection.settings_dict.get("OPTIONS", {}):
        pytest.skip("the database in use is not pooled (SQLite or DB_POOL_MAX_SIZE=0)")
    size = connection.settings_dict["OPTIONS"]["pool"]["max_size"]

    def query(_n):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(0.05), 1")
                return cursor.fetchone()[1]
        finally:
            connections.close_all()  # back to the pool, as a request or task end does

    with ThreadPoolExecutor(max_workers=3 * size) as pool:
        assert list(pool.map(query, range(3 * size))) == [1] * (3 * size)
