"""Tasks go to three queues — chat, ingest, default — and `make run` starts a worker for every
one: chat on a threads pool, ingestion on a prefork pool (the only one where Celery enforces
time limits, and whose children get the memory limit), so an upload never shares a process
with a streaming reply."""

from openspark.celery import app
from openspark.devstack import worker_commands


def _queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name, (), {})["queue"].name


def test_each_task_is_sent_to_its_queue(settings):
    assert _queue_of("generate_ai_response") == _queue_of("generate_conversation_title") == "chat"
    assert _queue_of("vectorize_document") == _queue_of("update_knowledge_base") == "ingest"
    others = ("send_notification", "knowledge_sweep", "replies_sweep", "cache_warm_hot_documents",
              "evaluate_retrieval")  # fmt: skip
    assert {_queue_of(name) for name in others} == {"default"}

    # Read when a task is sent: a renamed queue applies to the next task; empty = default.
    settings.INGEST_TASK_QUEUE = "bulk"
    settings.CHAT_TASK_QUEUE = ""
    assert _queue_of("vectorize_document") == "bulk"
    assert _queue_of("generate_ai_response") == "default"


def pools_by_queue(commands: list[list[str]]) -> dict[str, list[str]]:
    pools: dict[str, list[str]] = {}
    for args in commands:
        for queue in args[args.index("-Q") + 1].split(","):
            pools.setdefault(queue, []).append(args[args.index("--pool") + 1])
    return pools


def test_make_run_starts_one_worker_per_kind_of_work():
    commands = dict(worker_commands({}))
    assert pools_by_queue(list(commands.values())) == {
        "chat": ["threads"],
        "default": ["threads"],
        "ingest": ["prefork"],
    }
    # Queue names and sizes follow the same variables as the settings.
    env = {"CHAT_TASK_QUEUE": "c", "INGEST_TASK_QUEUE": "i", "CELERY_TASK_DEFAULT_QUEUE": "d",
           "CELERY_INGEST_CONCURRENCY": "3"}  # fmt: skip
    renamed = dict(worker_commands(env))
    assert pools_by_queue(list(renamed.values())) == {
        "c": ["threads"],
        "d": ["threads"],
        "i": ["prefork"],
    }
    ingest = renamed["worker-ingest"]
    assert ingest[ingest.index("--concurrency") + 1] == "3"
