"""CPU per streamed token in the worker's model client: the GLM test server (in this process,
no delay) streams long replies to the real zhipuai SDK, and the reading thread's CPU time
(`time.thread_time`) is divided by the events read. Side by side in one run, alternating:

- ours: `ZhipuChatProvider.stream` (the SDK's `StreamResponse` read as JSON objects);
- the SDK's typed chunks: iterating what `chat.completions.create(stream=True)` returns, each
  chunk built as the SDK's pydantic `ChatCompletionChunk` (what the provider did before).

    .venv/bin/python bench/chat_provider.py [--tokens 2000] [--rounds 5]

Not a test: it prints figures (record them in docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per reply")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"

    from openspark.llm.testserver import GLMTestServer
    from openspark.llm.zhipu import ZhipuChatProvider, make_zhipu_client

    messages = [{"role": "user", "content": f"[[tokens:{args.tokens}]] bench"}]
    with GLMTestServer() as server:
        provider = ZhipuChatProvider(api_key="bench.key", base_url=server.base_url)
        client = make_zhipu_client(api_key="bench.key", base_url=server.base_url)

        def ours() -> int:
            return sum(1 for _event in provider.stream(messages))

        def typed() -> int:
            chunks = client.chat.completions.create(model="glm-4", messages=messages, stream=True)
            return sum(1 for _chunk in chunks)

        costs: dict[str, list[float]] = {"ours": [], "SDK typed chunks": []}
        for _warm_up in range(2):
            ours(), typed()
        for _round in range(args.rounds):
            for name, read in (("ours", ours), ("SDK typed chunks", typed)):
                started = time.thread_time()
                events = read()
                costs[name].append((time.thread_time() - started) / events * 1e6)
    load = " / ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"# CPU per streamed event, {args.tokens}-token replies, {args.rounds} rounds; "
          f"load average {load}")  # fmt: skip
    for name, values in costs.items():
        print(f"{name}: median {statistics.median(values):.1f} µs "
              f"[{min(values):.1f}-{max(values):.1f}]")  # fmt: skip
    ratio = statistics.median(costs["SDK typed chunks"]) / statistics.median(costs["ours"])
    print(f"typed / ours: {ratio:.1f}x")


if __name__ == "__main__":
    main()
