import pytest

from openspark.embedded import free_port, start_milvus_lite

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    service = start_milvus_lite(tmp_path_factory.mktemp("milvus") / "data")
    yield service.url
    service.stop()


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_all_up(client, settings, milvus_uri):
    settings.MILVUS_URI = milvus_uri
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ready"
    assert {name for name, check in body["checks"].items() if check["status"] == "ok"} == {
        "database", "redis", "broker", "vector_store",
    }  # fmt: skip


def test_readyz_reports_the_vector_store_down(client, settings):
    settings.MILVUS_URI = f"http://127.0.0.1:{free_port()}"
    response = client.get("/readyz")
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["vector_store"]["status"] == "down"
    assert checks["database"]["status"] == "ok"
    assert checks["redis"]["status"] == "ok"


def test_readyz_reports_redis_and_broker_down(client, settings, milvus_uri):
    settings.MILVUS_URI = milvus_uri
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.REDIS_URL = dead
    from openspark.celery import app

    original = app.conf.broker_url
    app.conf.broker_url = dead
    try:
        response = client.get("/readyz")
    finally:
        app.conf.broker_url = original
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["redis"]["status"] == "down"
    assert checks["broker"]["status"] == "down"
    assert checks["vector_store"]["status"] == "ok"
