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
