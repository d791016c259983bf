"""CounterBatch while Redis is down: counts not written are kept, and a reader never sees them
vanish while a write is in flight (tests/cache/test_redis_down.py once read 0 errors in CI:
the writer thread had taken the batch off the queue and not yet put it back)."""

import threading

from openspark.core.redis import CounterBatch


class _SlowFailingBatch(CounterBatch):
    """Its writes fail (Redis down), each only once the test lets it."""

    def __init__(self) -> None:
        super().__init__("test-slow")
        self.writing = threading.Event()
        self.release = threading.Event()

    def _write(self, url, totals, ttls) -> bool:
        self.writing.set()
        assert self.release.wait(10)
        return False


def test_pending_counts_are_seen_while_a_failing_write_is_in_flight():
    batch = _SlowFailingBatch()
    batch.add("redis://127.0.0.1:1/0", "stats", "errors", 3)
    writer = threading.Thread(target=batch.flush)
    writer.start()
    assert batch.writing.wait(10)
    seen: list = []
    reader = threading.Thread(target=lambda: seen.extend(batch.pending()))
    reader.start()
    reader.join(0.2)
    batch.release.set()
    writer.join(10)
    reader.join(10)
    assert [item[3:5] for item in seen] == [("errors", 3)]
    assert [item[3:5] for item in batch.pending()] == [("errors", 3)]  # kept for the next flush
