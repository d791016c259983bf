"""The local embedder's precision: bf16 where the CPU has it natively, vectors that stay
interchangeable with fp32 ones (a base may hold both, e.g. after moving workers)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from django.core.exceptions import ImproperlyConfigured

from knowledge.embedders import LocalMiniLMEmbedder, _pick_precision

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


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")],
)
def test_auto_precision_follows_the_cpu(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert _pick_precision("auto") == expected
    assert _pick_precision("fp32") == "fp32"


def test_unknown_precision_is_a_configuration_error():
    with pytest.raises(ImproperlyConfigured):
        LocalMiniLMEmbedder(precision="fp16")


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
            np.testing.assert_allclose(vector, expected[TEXTS[i % 3]], atol=1e-3)
