import psutil
import pytest
import redis

from openspark.embedded import free_port, start_milvus_lite, start_redis

pytestmark = pytest.mark.django_db

TOKEN = "health-token-for-tests-0123456789"
CHECKS = {"database", "redis", "broker", "vector_store"}


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    service = start_milvus_lite(tmp_path_factory.mktemp("milvus") / "data")
    yield service.url
    service.stop()


@pytest.fixture
def up(settings, milvus_uri):
    settings.MILVUS_URI = milvus_uri
    settings.HEALTH_TOKEN = TOKEN


def _point_cache_at(settings, url: str) -> None:
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": url,
            "OPTIONS": {**settings.CACHES["default"]["OPTIONS"]},
        }
    }


def _broker_at(monkeypatch, url: str) -> None:
    from openspark.celery import app

    monkeypatch.setattr(app.conf, "broker_url", url)


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_all_up_says_only_ok_to_the_public(client, up):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "status": "ready",
        "checks": {name: {"status": "ok"} for name in CHECKS},
    }
    assert b"redis " not in response.content and b"latency" not in response.content


def test_readyz_details_go_to_staff_and_token_holders_only(client, up, user, staff_user):
    def detailed(**headers) -> bool:
        response = client.get("/readyz", headers=headers)
        assert response.status_code == 200, response.content
        checks = response.json()["checks"]
        assert set(checks) == CHECKS
        return "latency_ms" in checks["redis"]

    assert not detailed()
    assert not detailed(Authorization="Bearer wrong-token")
    assert not detailed(Authorization=f"Bearer {TOKEN}x")
    assert not detailed(X_Health_Token=TOKEN[:-1])
    assert detailed(Authorization=f"Bearer {TOKEN}")
    assert detailed(X_Health_Token=TOKEN)
    client.force_login(user)
    assert not detailed()
    client.force_login(staff_user)
    assert detailed()

    checks = client.get("/readyz").json()["checks"]
    assert checks["redis"]["detail"].startswith("redis ")
    assert checks["database"]["detail"] in {"sqlite", "postgresql"}
    assert all(item["latency_ms"] >= 0 for item in checks.values())


def test_readyz_no_token_configured_means_staff_only(client, up, settings):
    settings.HEALTH_TOKEN = ""
    response = client.get("/readyz", headers={"Authorization": "Bearer "})
    assert "latency_ms" not in response.json()["checks"]["redis"]


def test_readyz_reports_the_vector_store_down_without_its_error_in_public(client, up, settings):
    port = free_port()
    settings.MILVUS_URI = f"http://127.0.0.1:{port}"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "not_ready",
        "checks": {
            "database": {"status": "ok"},
            "redis": {"status": "ok"},
            "broker": {"status": "ok"},
            "vector_store": {"status": "down"},
        },
    }
    assert str(port).encode() not in response.content

    detailed = client.get("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert detailed.status_code == 503
    assert detailed.json()["checks"]["vector_store"]["error"]


def test_readyz_reports_redis_and_broker_down(client, up, settings, monkeypatch):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    _point_cache_at(settings, dead)
    _broker_at(monkeypatch, dead)
    response = client.get("/readyz", headers={"X-Health-Token": TOKEN})
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["redis"]["status"] == "down" and "Error" in checks["redis"]["error"]
    assert checks["broker"]["status"] == "down"
    assert checks["vector_store"]["status"] == "ok"
    assert checks["database"]["status"] == "ok"


def test_readyz_reuses_its_clients_and_serves_the_public_a_recent_run(
    client, up, settings, monkeypatch, milvus_uri, tmp_path
):
    """Counted on a Redis server of the test's own: the public answer comes from one run
    however often it is asked for; fresh runs (token) open no new connection, to Redis, the
    broker or Milvus."""
    server = start_redis(tmp_path / "redis", persist=False)
    try:
        _point_cache_at(settings, server.url)
        _broker_at(monkeypatch, server.url)
        settings.READYZ_CACHE_SECONDS = 60
        monitor = redis.Redis.from_url(server.url)

        def pings() -> int:
            return monitor.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)

        def milvus_links() -> set[int]:
            milvus_port = int(milvus_uri.rsplit(":", 1)[1])
            return {
                link.laddr.port
                for link in psutil.Process().net_connections(kind="tcp")
                if link.raddr and link.raddr.port == milvus_port and link.status == "ESTABLISHED"
            }

        for _ in range(20):
            assert client.get("/readyz").status_code == 200
        assert pings() == 1  # one run, of which the broker's PING

        token = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/readyz", headers=token).status_code == 200
        connections = monitor.info("stats")["total_connections_received"]
        links = milvus_links()
        assert links
        for _ in range(5):
            assert client.get("/readyz", headers=token).status_code == 200
        assert pings() == 1 + 6  # a fresh run each
        assert monitor.info("stats")["total_connections_received"] == connections
        assert milvus_links() == links
        monitor.close()
    finally:
        server.stop()
