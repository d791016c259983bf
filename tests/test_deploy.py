"""Deployment defaults: the image runs the production settings (and collects its static files
at build with placeholders only), `check --deploy` is clean for them, and a production
response is HTTPS-only with secure cookies, HSTS and the Content-Security-Policy."""

import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What a deployment sets (docker-compose.yml's web service): its secrets and the proxy's
# https header. Nothing here is contacted.
DEPLOYMENT = {
    "DJANGO_SETTINGS_MODULE": "openspark.settings.production",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "openspark.example.com",
    "DATABASE_URL": "postgres://openspark:secret@postgres:5432/openspark",
    "REDIS_URL": "redis://redis:6379/0",
    "MILVUS_URI": "http://milvus:19530",
    "EMAIL_URL": "smtp+tls://mailer:secret@smtp.example.com:587",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
}


def _run(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    # Only the deployment's variables (not this test run's), and a scratch folder of its own.
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OPENSPARK_VAR_DIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip


def _dockerfile_instructions() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    return [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines()]


def test_the_image_runs_production_and_collects_static_at_build(tmp_path):
    instructions = _dockerfile_instructions()
    env_lines = [line for line in instructions if line.startswith("ENV ")]
    assert any(
        "DJANGO_SETTINGS_MODULE=openspark.settings.production" in line.split() for line in env_lines
    ), env_lines

    (collect,) = [
        line for line in instructions if line.startswith("RUN ") and "collectstatic" in line
    ]
    command = collect.removeprefix("RUN ").split()
    assignments = dict(word.split("=", 1) for word in command if re.match(r"^[A-Z_]+=", word))
    assert "DJANGO_SETTINGS_MODULE" not in assignments  # the image's own, production
    static_root = tmp_path / "static"
    result = _run(
        ["manage.py", "collectstatic", "--noinput"],
        {**assignments, "DJANGO_SETTINGS_MODULE": "openspark.settings.production",
         "STATIC_ROOT": str(static_root)},
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (static_root / "js" / "page-data.js").exists()
    assert (static_root / "drf_spectacular_sidecar" / "swagger-ui-dist").is_dir()


def test_the_image_makes_the_int8_local_model_at_build_under_production_settings(tmp_path):
    from django.conf import settings

    from knowledge.embedders import local_embedder

    (build,) = [
        line for line in _dockerfile_instructions()
        if line.startswith("RUN ") and "build_local_model" in line
    ]  # fmt: skip
    command = build.removeprefix("RUN ").split()
    assignments = dict(word.split("=", 1) for word in command if re.match(r"^[A-Z_]+=", word))
    assert "DJANGO_SETTINGS_MODULE" not in assignments  # the image's own, production
    # The model made by `make test` (same folder) is found: the command runs, quick.
    models = settings.KNOWLEDGE_LOCAL_MODEL_DIR
    result = _run(
        ["manage.py", "build_local_model"],
        {**assignments, "DJANGO_SETTINGS_MODULE": "openspark.settings.production",
         "KNOWLEDGE_LOCAL_MODEL_DIR": str(models)},
        tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    if local_embedder().resolved_precision() == "int8":
        assert list(models.glob("all-MiniLM-L6-v2-int8-*.xml")), list(models.iterdir())


def test_check_deploy_is_clean_for_the_production_settings(tmp_path):
    result = _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], DEPLOYMENT, tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout


# A production process answering through Django's test client (no server, no database).
_RESPONSES = """
import json
import django
django.setup()
from django.test import Client

client = Client()
answers = {}
for name, path, extra in [
    ("http", "/accounts/login/", {}),
    ("health", "/healthz", {}),
    ("forged", "/accounts/login/", {"HTTP_X_FORWARDED_PROTO": "https"}),
    ("https", "/accounts/login/", {"secure": True}),
]:
    response = client.get(path, **extra)
    answers[name] = {
        "status": response.status_code,
        "location": response.get("Location", ""),
        "headers": dict(response.headers),
        "cookies": {k: {"secure": bool(v["secure"])} for k, v in response.cookies.items()},
    }
print(json.dumps(answers))
"""


def _responses(tmp_path, **env) -> dict:
    settings = {**DEPLOYMENT, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", **env}
    result = _run(["-c", _RESPONSES], settings, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_production_is_https_only_with_secure_cookies_hsts_and_the_csp(tmp_path):
    answers = _responses(tmp_path, ALLOWED_HOSTS="testserver")
    assert answers["http"]["status"] == 301
    assert answers["http"]["location"] == "https://testserver/accounts/login/"
    # Container healthchecks ask over plain HTTP: not redirected.
    assert answers["health"]["status"] == 200
    # The proxy's header is trusted when configured: a forwarded https request is served.
    assert answers["forged"]["status"] == 200

    https = answers["https"]
    assert https["status"] == 200
    headers = https["headers"]
    assert headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    policy = dict(
        part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert https["cookies"]["csrftoken"]["secure"] is True


def test_the_forwarded_proto_header_is_trusted_only_when_configured(tmp_path):
    answers = _responses(tmp_path, ALLOWED_HOSTS="testserver", SECURE_PROXY_SSL_HEADER="")
    assert answers["forged"]["status"] == 301  # a client's own header is not believed
    assert answers["https"]["status"] == 200
