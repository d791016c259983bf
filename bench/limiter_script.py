"""Instructions the limiter's script costs inside Redis, per 4-rule check, under callgrind:
repeatable where timings on this shared 2-core VM are not (the same count run after run).

    .venv/bin/python bench/limiter_script.py [other.lua ...]

Runs the system's redis-server under `valgrind --tool=callgrind`, counting only inside
EVALSHA (`--toggle-collect=evalShaCommand`), and sends 2,000 checks of four token-bucket
rules (global + three per-caller, 50 callers) packed exactly as throttling/limiter.py packs
them; prints instructions per check, next to a `return 1` script (the floor of any EVALSHA)
and any variant scripts given (same arguments), for comparing changes to limiter.lua.
Not a test: record the figures in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHECKS = int(os.environ.get("BENCH_CHECKS", "2000"))


def _instructions_per_check(script: str, workdir: Path) -> float:
    import redis

    from openspark.embedded import die_with_parent, free_port
    from throttling.limiter import Rule, script_call

    out = workdir / "callgrind.out"
    port = free_port()
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--toggle-collect=evalShaCommand",
         f"--callgrind-out-file={out}", shutil.which("redis-server"), "--port", str(port),
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        for _ in range(300):
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        sha = client.script_load(script)
        calls = []
        for caller in range(50):
            who = f"u:{caller}"
            rules = (Rule("global", "all", 10**9), Rule("ip", f"ip:10.0.0.{caller}", 2000),
                     Rule("plan", who, 2000), Rule("endpoint:messages", who, 2000))  # fmt: skip
            # The limiter's own keys and arguments, sent to this script's SHA.
            keys, args = script_call(rules=rules)
            calls.append((len(keys), *keys, *args))
        for n in range(CHECKS):
            client.evalsha(sha, *calls[n % len(calls)])
        with contextlib.suppress(redis.exceptions.ConnectionError):
            client.shutdown(nosave=True)
        server.wait(60)
    finally:
        if server.poll() is None:  # failed half-way: no server left behind
            server.kill()
            server.wait(10)
    total = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    return int(total.group(1)) / CHECKS


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openspark.settings.test")
    import django

    django.setup()
    if not shutil.which("valgrind") or not shutil.which("redis-server"):
        raise SystemExit("needs valgrind and the system's redis-server")
    scripts = {
        "limiter.lua": (ROOT / "throttling" / "lua" / "limiter.lua").read_text(),
        "return 1": "return 1",
    }
    for name in sys.argv[1:]:
        scripts[name] = Path(name).read_text()
    print(f"Instructions per 4-rule check inside EVALSHA ({CHECKS} checks, callgrind):")
    with tempfile.TemporaryDirectory(prefix="osbench-") as workdir:
        for name, script in scripts.items():
            print(f"  {name:<40} {_instructions_per_check(script, Path(workdir)):>10,.0f}")


if __name__ == "__main__":
    main()
