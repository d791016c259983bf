"""`make load` / `make soak`: the load scenario against the whole stack on this machine.

    .venv/bin/python bench/load/run.py                        # 3 minutes (make load)
    .venv/bin/python bench/load/run.py --duration 1800        # the soak (make soak)
    DATABASE_URL=postgres://... .venv/bin/python bench/load/run.py   # on PostgreSQL

Starts what `make run` starts (`openspark.devstack.Stack`: embedded Redis, Milvus Lite's server,
migrations, uvicorn, the chat and ingest Celery workers, beat) in a folder of its own under
var/load/, with the GLM test server (in this process) as the model and the embedding service;
seeds users (bench/load/scenario.py); runs Locust headless (bench/load/locustfile.py); samples
every process's memory (RSS, with children) and open connections (fds, Redis clients,
database connections) while it runs; waits for every reply and document to end; stops
everything; prints the figures as Markdown and writes them to `<run folder>/report.json`.
Exit status 1 when a goal is missed (a 5xx, a lost reply, an unexplained 429, memory past
the bound). A model fault (an error mid-stream) is injected every `--fault-every` seconds, so
failed replies are part of the mix.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.load.scenario import Mix, locust_run, seed, verdict, wait_finished  # noqa: E402

PROCESSES = ("web", "worker-chat", "worker-ingest", "beat", "redis", "milvus")


def _log(message: str) -> None:
    print(f"[load] {time.strftime('%H:%M:%S')} {message}", flush=True)


class Sampler(threading.Thread):
    """Every `every` s: per process (children included) RSS, open fds and threads; Redis
    clients; database connections; load average."""

    def __init__(self, stack, every: float) -> None:
        super().__init__(daemon=True, name="sampler")
        self.stack, self.every = stack, every
        self.samples: list[dict] = []
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.halt.is_set():
            self.sample()
            self.halt.wait(self.every)

    def sample(self) -> dict:
        import psutil

        row: dict = {"t": round(time.monotonic() - self.t0, 1), "load1": os.getloadavg()[0]}
        database_files = 0
        for service in self.stack.services:
            if service.name not in PROCESSES:
                continue
            try:
                root = psutil.Process(service.process.pid)
                family = [root, *root.children(recursive=True)]
                rss = fds = threads = 0
                for proc in family:
                    with proc.oneshot():
                        rss += proc.memory_info().rss
                        fds += proc.num_fds()
                        threads += proc.num_threads()
                        database_files += sum(
                            1 for f in proc.open_files() if f.path.endswith(".sqlite3")
                        )
            except psutil.Error:
                continue
            row[service.name] = {
                "rss_mb": round(rss / 2**20, 1),
                "fds": fds,
                "threads": threads,
                "processes": len(family),
            }
        row["redis_clients"] = self._redis_clients()
        row["db_connections"] = self._db_connections(database_files)
        self.samples.append(row)
        return row

    def _redis_clients(self) -> int | None:
        import redis

        try:
            client = redis.Redis.from_url(self.stack.env["REDIS_URL"])
            try:
                return int(client.info("clients")["connected_clients"]) - 1  # not this one
            finally:
                client.close()
        except redis.RedisError:
            return None

    def _db_connections(self, sqlite_files: int) -> int | None:
        """PostgreSQL: sessions on the database other than this process's; SQLite: the
        database file's open descriptors in the stack's processes."""
        from django.db import connection

        if connection.vendor != "postgresql":
            return sqlite_files
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"
                )
                return cursor.fetchone()[0]
        except Exception:  # a sample is not worth failing the run for
            return None
        finally:
            connection.close()


def _series(samples: list[dict], key: str, field: str | None) -> list[float]:
    values = []
    for row in samples:
        value = row.get(key)
        if field is not None:
            value = value.get(field) if isinstance(value, dict) else None
        if value is not None:
            values.append(value)
    return values


def _slope_per_10min(samples: list[dict], key: str, field: str | None) -> float | None:
    points = [
        (row["t"], v)
        for row in samples
        if (v := (row.get(key) or {}).get(field) if field else row.get(key)) is not None
    ]
    if len(points) < 3:
        return None
    return statistics.linear_regression(*zip(*points, strict=True)).slope * 600


def resources(samples: list[dict], *, warm: float, bound_pct: float, bound_mb: float) -> dict:
    """Start (first sample after `warm` s of load) against end (last sample under load), per
    figure; RSS growth past `bound_pct` % + `bound_mb` MB breaks the bound."""
    under = [row for row in samples if row["t"] >= warm] or samples
    start, end = under[0], under[-1]
    rows, over = [], []
    figures = [(name, "rss_mb") for name in PROCESSES] + [(name, "fds") for name in PROCESSES]
    figures += [("redis_clients", None), ("db_connections", None)]
    for key, field in figures:
        series = _series(under, key, field)
        if not series:
            continue
        first, last = series[0], series[-1]
        row = {
            "figure": f"{key} {field}" if field else key,
            "start": first,
            "end": last,
            "max": max(series),
            "slope_per_10min": _slope_per_10min(under, key, field),
            # Flat means the same level in every quarter, not only at both ends.
            "quarter_medians": [
                statistics.median(part)
                for n in range(4)
                if (part := series[n * len(series) // 4 : (n + 1) * len(series) // 4])
            ],
        }
        if field == "rss_mb" and key in ("web", "worker-chat", "worker-ingest", "beat"):
            row["bound"] = round(first * (1 + bound_pct / 100) + bound_mb, 1)
            if last > row["bound"]:
                over.append(row["figure"])
        rows.append(row)
    return {"start_t": start["t"], "end_t": end["t"], "rows": rows, "over_bound": over}


def markdown(report: dict) -> str:
    r, res = report["results"], report["resources"]
    lines = [
        f"## Load run {report['started']} — {report['duration_s']:.0f} s, "
        f"{report['mix']['chat']} chat + {report['mix']['upload']} upload + "
        f"{report['mix']['api']} API users, database {report['database']}",
        f"load average at start / end: {report['load_start']} / {report['load_end']}",
        "",
        "| type | request | requests | req/s | p50 ms | p95 ms | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in [*r["entries"], r["total"]]:
        lines.append(
            f"| {e['type']} | {e['name']} | {e['requests']} | {e['rps']:.2f} | "
            f"{e['p50_ms'] or 0:.0f} | {e['p95_ms'] or 0:.0f} | {e['failures']} |"
        )
    v = report["verdict"]
    lines += [
        "",
        f"replies (client): {r['replies']}; in the database: {report['replies_db']}",
        f"documents: {r['documents']}; model faults injected: {report['faults']}",
        f"429s explained by a configured limit: {r['throttle']['explained']}",
        f"socket events: {r['events']}; connection resets of idle keep-alive connections "
        f"(not counted as failures): {r.get('connection_resets', 0)}",
        "",
        "| goal | count |",
        "|---|---|",
    ]
    lines += [f"| {name} | {count} |" for name, count in v["checks"].items()]
    lines += [
        "",
        f"memory and connections (start = {res['start_t']:.0f} s, end = "
        f"{res['end_t']:.0f} s into the run):",
        "",
        "| figure | start | end | max | medians by quarter | slope per 10 min | bound |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in res["rows"]:
        slope = row["slope_per_10min"]
        lines.append(
            f"| {row['figure']} | {row['start']} | {row['end']} | {row['max']} | "
            f"{' / '.join(f'{m:g}' for m in row.get('quarter_medians', []))} | "
            f"{'' if slope is None else f'{slope:+.2f}'} | {row.get('bound', '')} |"
        )
    lines += ["", f"**{'all goals met' if report['ok'] else 'GOALS MISSED'}**"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180, help="seconds of load")
    parser.add_argument("--chat", type=int, default=Mix.chat)
    parser.add_argument("--upload", type=int, default=Mix.upload)
    parser.add_argument("--api", type=int, default=Mix.api)
    parser.add_argument("--sample-every", type=float, default=5)
    parser.add_argument(
        "--warm",
        type=float,
        default=None,
        help="seconds of load before memory's start figure (default: ¼ of the run, at most 120)",
    )
    parser.add_argument("--rss-bound-pct", type=float, default=15)
    parser.add_argument("--rss-bound-mb", type=float, default=25)
    parser.add_argument("--fault-every", type=float, default=20, help="0: no model faults")
    parser.add_argument("--drain", type=float, default=120, help="seconds to wait for the end")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    args = parser.parse_args()

    from openspark.devstack import Stack
    from openspark.embedded import free_port
    from openspark.llm.testserver import GLMTestServer

    run_dir = ROOT / "var" / "load" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    glm = GLMTestServer(first_token_delay=0.2, token_delay=0.03).start()
    os.environ.update(
        DJANGO_SETTINGS_MODULE="openspark.settings.local",
        DEBUG="0",  # DEBUG keeps every SQL query of a worker in memory
        SECRET_KEY="load-test-secret-key-not-for-production",
        LLM_PROVIDER="zhipuai",
        ZHIPUAI_API_KEY="load-key.secret",
        ZHIPUAI_BASE_URL=glm.base_url,
        LLM_REQUEST_TIMEOUT="30",
        LOG_LEVEL="WARNING",
        NO_PROXY="127.0.0.1,localhost",
        OPENSPARK_VAR_DIR=str(run_dir),  # the SQLite file, media: the stack's and this process's
    )
    port = free_port()
    stack = Stack(run_dir, port, "127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    mix = Mix(chat=args.chat, upload=args.upload, api=args.api)
    sampler = None
    faults = 0
    halt_faults = threading.Event()
    try:
        stack.start_embedded()
        os.environ.update(REDIS_URL=stack.env["REDIS_URL"], MILVUS_URI=stack.env["MILVUS_URI"])
        _log(f"migrating ({os.environ.get('DATABASE_URL', 'SQLite')[:20]}…)")
        stack.manage("migrate", "--noinput", "-v", "0")
        import django

        django.setup()
        from django.db import connection

        seeded = seed(url=url, mix=mix)
        seed_path = run_dir / "seed.json"
        seeded.write(seed_path)
        connection.close()
        stack.start_app()
        stack.wait_ready()
        _log(f"stack ready at {url}; logs in {stack.logs}")
        sampler = Sampler(stack, args.sample_every)
        sampler.start()

        def inject() -> None:
            nonlocal faults
            while not halt_faults.wait(args.fault_every):
                glm.error_mid_stream(after_tokens=3)
                faults += 1

        if args.fault_every:
            threading.Thread(target=inject, daemon=True).start()
        load_start = "/".join(f"{x:.2f}" for x in os.getloadavg())
        _log(f"locust: {mix.total()} users for {args.duration:.0f} s; load average {load_start}")
        results = locust_run(
            url=url,
            seed_path=seed_path,
            results_path=run_dir / "results.json",
            duration=args.duration,
            mix=mix,
            log_path=run_dir / "locust.log",
        )
        halt_faults.set()
        load_end = "/".join(f"{x:.2f}" for x in os.getloadavg())
        sampler.sample()  # the end, before the drain
        sampler.halt.set()
        _log("load stopped; waiting for every reply and document to end")
        replies, documents = wait_finished(run=seeded.run, timeout=args.drain)
        from bench.load.scenario import replies_by_status

        warm = args.warm if args.warm is not None else min(120, args.duration / 4)
        under_load = [row for row in sampler.samples if row["t"] <= sampler.samples[-1]["t"]]
        res = resources(
            under_load, warm=warm, bound_pct=args.rss_bound_pct, bound_mb=args.rss_bound_mb
        )
        v = verdict(results, unfinished_replies=replies, unfinished_documents=documents)
        v["checks"]["processes past the memory bound"] = len(res["over_bound"])
        report = {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seeded.started)),
            "duration_s": args.duration,
            "mix": seeded.mix,
            "database": connection.vendor,
            "load_start": load_start,
            "load_end": load_end,
            "faults": faults,
            "results": results,
            "replies_db": replies_by_status(run=seeded.run),
            "verdict": v,
            "resources": res,
            "samples": sampler.samples,
            "ok": v["ok"] and not res["over_bound"],
            "run_dir": str(run_dir),
        }
        (run_dir / "report.json").write_text(json.dumps(report, indent=1, default=str))
        text = markdown(report)
        (run_dir / "report.md").write_text(text + "\n")
        if args.out:
            args.out.write_text(text + "\n")
        print(text, flush=True)
        if not report["ok"]:
            print(json.dumps(v["problems"], indent=1, default=str), flush=True)
        return 0 if report["ok"] else 1
    finally:
        halt_faults.set()
        if sampler is not None:
            sampler.halt.set()
        stack.stop()
        glm.stop()
        _log(f"stopped; run folder {run_dir}")


if __name__ == "__main__":
    sys.exit(main())
