"""The consumer's catch-up when a reply's log is missing: never one delta standing for several
seqs unless it says so (`from_seq`), and batches the channel layer dropped are read from the
log before `reply.done`."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from conversations import consumers, realtime
from conversations.consumers import ChatConsumer


class Recorder(ChatConsumer):
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.sent_seq: dict[int, int] = {}
        self.finished: set[int] = set()

    async def _send_json(self, data: dict) -> None:
        self.sent.append(data)


def run(coro):
    """On a thread of its own: the browser tests may leave an event loop running here."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture
def state(monkeypatch):
    """Scripted log reads (a list of (entries, exists), one per read) and database state."""
    script: dict = {"logs": [], "db": (None, 0, "")}

    async def read(*, message_id, after_seq=0):
        return script["logs"].pop(0)

    async def message_state(message_id):
        return script["db"]

    monkeypatch.setattr(realtime, "reply_log_read", read)
    monkeypatch.setattr(consumers, "_message_state", message_state)
    return script


def test_log_appearing_during_the_catch_up_sends_nothing_the_group_brings(state):
    # No log at the first read; by the database read the worker has streamed and
    # checkpointed seqs 1..3, which reach the socket through the group it had joined.
    state["logs"] = [([], False), ([], True)]
    state["db"] = (None, 3, "one two three")
    consumer = Recorder()
    run(consumer._catch_up(7))
    assert consumer.sent == []
    assert consumer.sent_seq == {}


def test_expired_log_sends_the_checkpoint_as_one_merged_delta_that_says_so(state):
    state["logs"] = [([], False), ([], False)]
    state["db"] = (None, 3, "one two three")
    consumer = Recorder()
    run(consumer._catch_up(7))
    assert consumer.sent == [
        {"type": "reply.delta", "message_id": 7, "seq": 3, "from_seq": 1, "delta": "one two three"}
    ]


def test_a_reply_seen_pending_needs_no_database_read(state):
    state["logs"] = [([], False)]
    state["db"] = None  # would fail if read
    consumer = Recorder()
    run(consumer._catch_up(7, queued=True))
    assert consumer.sent == []


def test_dropped_batches_are_read_from_the_log_before_reply_done(state):
    final = {"type": "reply.done", "message": {"id": 7, "last_seq": 3, "content": "a b c"}}
    state["logs"] = [
        (
            [
                realtime.LogEntry(seq=2, delta=" b"),
                realtime.LogEntry(seq=3, delta=" c"),
                realtime.LogEntry(seq=4, end="completed"),
            ],
            True,
        )
    ]
    state["db"] = (final, 3, "a b c")
    consumer = Recorder()
    consumer.sent_seq[7] = 1
    run(consumer.reply_done(final))
    assert [(e["type"], e.get("seq")) for e in consumer.sent] == [
        ("reply.delta", 2),
        ("reply.delta", 3),
        ("reply.done", None),
    ]
