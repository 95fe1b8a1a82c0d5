"""Store benchmark: SQLite against PostgreSQL (a local server with fsync on), three figures.

    python -m benchmarks.stores [--models models] [--duration 5] [--rounds 3] [--requests 2000]

(a) the cost of one row written in batches of 64 (the write-behind's batch), per store;
(b) POST /predict under gunicorn (``wrk``, as in benchmarks/predictor.py) with the store on
    SQLite and on PostgreSQL, each as a ratio of bare Flask (target ≥ 0.6);
(c) visibility delay with PostgreSQL: from a /predict 200 to its row being visible to another
    connection (a poller reading new rows every 5 ms), p50/p99 over ``--requests`` (target
    p99 ≤ 2 s).
Prints a table. (Not named store.py: benchmarks/ is on the path of bare_app's gunicorn and of
``python benchmarks/predictor.py``, where it would shadow the ``store`` package.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import requests
import sqlalchemy as sa

from benchmarks.predictor import HERE, free_port, gunicorn, run_wrk, wrk_script
from exporter.__main__ import prepare_multiproc_dir
from exporter.settings import PredictorSettings
from store import PredictionRecord, SQLiteStore, new_prediction_id
from store.sql import SQLStore, engine_url
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tests.processes import PostgresServer, start_postgres

BATCH = 64


def sample_rows(n: int, titles: list[str]) -> list[PredictionRecord]:
    features = {"title_chars": 40, "body_chars": 0, "n_code_blocks": 0, "n_links": 0,
                "n_tokens": 7, "oov_ratio": 0.2, "n_predicted_tags": 2, "max_score": 0.6,
                "top_tag": "python"}  # fmt: skip
    return [
        PredictionRecord(
            id=new_prediction_id(),
            created_at=time.time(),
            title=titles[i % len(titles)],
            body="",
            tags=["python", "list"],
            scores={"python": 0.6, "list": 0.4},
            inference_seconds=5e-5,
            model_version="bench",
            features=features,
            url=f"https://stackoverflow.com/q/{i}",
        )
        for i in range(n)
    ]


def write_cost(store: SQLiteStore | SQLStore, rows: list[PredictionRecord]) -> dict[str, float]:
    """Seconds per row (mean) and per batch (p50, p99) for ``rows`` written 64 at a time."""
    for i in range(0, 10 * BATCH, BATCH):  # warm-up: connections, statement caches
        store.save_predictions(rows[i : i + BATCH])
    per_batch = []
    for i in range(10 * BATCH, len(rows), BATCH):
        t0 = time.perf_counter()
        store.save_predictions(rows[i : i + BATCH])
        per_batch.append(time.perf_counter() - t0)
    return {
        "row": float(np.sum(per_batch)) / (len(per_batch) * BATCH),
        "p50": float(np.median(per_batch)),
        "p99": float(np.percentile(per_batch, 99)),
        "batches": len(per_batch),
    }


@contextmanager
def predictor(name: str, app: str, models: Path, tmp: Path, workers: int,
              extra: dict[str, str], chdir: Path | None = None) -> Iterator[str]:  # fmt: skip
    settings = PredictorSettings(
        host="127.0.0.1", port=free_port(), workers=workers, log_level="warning"
    )
    env = dict(os.environ)
    env.update(
        PROMETHEUS_MULTIPROC_DIR=str(prepare_multiproc_dir(tmp / f"mp-{name}")),
        TAGWATCH_MODELS_DIR=str(models.resolve()),
        TAGWATCH_FOLLOW_REGISTRY="false",
        TAGWATCH_STORE_SPOOL_DIR=str(tmp / f"spool-{name}"),
    )
    env.update(extra)
    with gunicorn(app, env, settings, chdir, tmp / f"{name}.log") as url:
        for _ in range(50):  # warm every worker
            requests.post(url + "/predict", json={"title": "python list"}, timeout=10)
        yield url


def visibility(url: str, pg_url: str, n: int, clients: int) -> dict[str, float]:
    """Seconds from each 200 to its row being visible in PostgreSQL (p50, p99, max)."""
    engine = sa.create_engine(engine_url(pg_url))
    with engine.connect() as conn:
        last = int(
            conn.execute(sa.text("SELECT coalesce(max(seq), 0) FROM predictions")).scalar_one()
        )
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        nonlocal last
        with engine.connect() as conn:
            while not (done.is_set() and all(i in seen for i in acked)):
                rows = conn.execute(
                    sa.text("SELECT seq, id FROM predictions WHERE seq > :s ORDER BY seq"),
                    {"s": last},
                ).all()
                conn.rollback()  # a new snapshot for the next read
                now = time.perf_counter()
                for seq, pid in rows:
                    seen.setdefault(pid, now)
                    last = max(last, seq)
                if done.is_set() and time.perf_counter() > deadline:
                    return
                time.sleep(0.005)

    def client(k: int) -> None:
        with requests.Session() as s:
            for i in range(k, n, clients):
                r = s.post(url + "/predict", json={"title": f"python list {i}"}, timeout=10)
                t = time.perf_counter()
                r.raise_for_status()
                acked[r.json()["prediction_id"]] = t

    deadline = float("inf")
    poller = threading.Thread(target=poll)
    poller.start()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    deadline = time.perf_counter() + 30
    done.set()
    poller.join()
    engine.dispose()
    delays = [max(seen[i] - t, 0.0) for i, t in acked.items() if i in seen]
    return {
        "n": len(acked),
        "missing": len(acked) - len(delays),
        "rps": len(acked) / elapsed,
        "p50": float(np.median(delays)),
        "p99": float(np.percentile(delays, 99)),
        "max": float(np.max(delays)),
    }


def main() -> int:
    settings = TagwatchSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", type=Path, default=settings.models_dir)
    p.add_argument("--duration", type=int, default=5, help="seconds of load per wrk run")
    p.add_argument("--rounds", type=int, default=3, help="wrk runs per variant (median kept)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--rows", type=int, default=64 * 210, help="rows written per store in (a)")
    p.add_argument("--requests", type=int, default=2000, help="requests timed in (c)")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients in (c)")
    a = p.parse_args()
    if shutil.which("wrk") is None:
        print("error: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    titles = load_questions(settings.titles_path)["title"].astype(str).tolist()[-5000:]
    tmp = Path(tempfile.mkdtemp(prefix="tagwatch-bench-store-"))
    server: PostgresServer | None = None
    try:
        _, server = start_postgres(fast=False)  # fsync on: a real commit
        pg_write = server.create_database("bench_write")
        pg_http = server.create_database("bench_http")
        # (a)
        rows = sample_rows(a.rows, titles)
        lite_store = SQLiteStore(tmp / "write.sqlite3")
        pg_store = SQLStore(pg_write)
        writes = {"SQLite (WAL, synchronous=NORMAL)": write_cost(lite_store, rows),
                  "PostgreSQL 15 (local, fsync on)": write_cost(pg_store, rows)}  # fmt: skip
        lite_store.close()
        pg_store.close()
        # (b) all servers up at once, loaded in turn (fair on a shared machine)
        script = wrk_script(titles[:500], tmp)
        samples: dict[str, list[dict[str, float]]] = {"bare": [], "sqlite": [], "postgresql": []}
        with ExitStack() as stack:
            urls = {
                "bare": stack.enter_context(
                    predictor("bare", "bare_app:create_app()", a.models, tmp, a.workers, {}, HERE)
                ),
                "sqlite": stack.enter_context(
                    predictor("sqlite", "exporter.app:create_app()", a.models, tmp, a.workers,
                              {"TAGWATCH_STORE_URL": f"sqlite:///{tmp / 'http.sqlite3'}"})
                ),
                "postgresql": stack.enter_context(
                    predictor("postgresql", "exporter.app:create_app()", a.models, tmp, a.workers,
                              {"TAGWATCH_STORE_URL": pg_http})
                ),
            }  # fmt: skip
            for _ in range(a.rounds):
                for name, url in urls.items():
                    samples[name].append(run_wrk(url, script, a.duration, a.connections))
            # (c) on the PostgreSQL predictor, after (b)
            vis = visibility(urls["postgresql"], pg_http, a.requests, a.clients)
        http = {k: sorted(v, key=lambda r: r["rps"])[len(v) // 2] for k, v in samples.items()}
        stored = SQLStore(pg_http, readonly=True)
        n_pg = stored.count()
        stored.close()
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(f"(a) write cost, batches of {BATCH} rows (one transaction each)")
    print(f"    {'store':<36}{'per row':>10}{'batch p50':>12}{'batch p99':>12}")
    for label, w in writes.items():
        print(f"    {label:<36}{w['row'] * 1e6:>8.1f}µs{w['p50'] * 1e3:>10.2f}ms"
              f"{w['p99'] * 1e3:>10.2f}ms")  # fmt: skip
    print()
    print(f"(b) HTTP under gunicorn ({a.workers} sync workers), wrk 1 thread {a.connections} "
          f"connections, median of {a.rounds} interleaved {a.duration} s runs")  # fmt: skip
    print(f"    {'endpoint':<36}{'req/s':>10}{'p50':>10}{'p99':>10}{'non-2xx':>9}{'÷ bare':>8}")
    labels = {"bare": "bare Flask, constant JSON", "sqlite": "POST /predict, store SQLite",
              "postgresql": "POST /predict, store PostgreSQL"}  # fmt: skip
    for key, label in labels.items():
        r = http[key]
        ratio = r["rps"] / http["bare"]["rps"]
        print(f"    {label:<36}{r['rps']:>10.0f}{r['p50'] * 1e3:>8.2f}ms{r['p99'] * 1e3:>8.2f}ms"
              f"{r['non2xx']:>9.0f}{ratio:>8.2f}")  # fmt: skip
    ratio = http["postgresql"]["rps"] / http["bare"]["rps"]
    print(f"    PostgreSQL ÷ bare: {ratio:.2f} (target ≥ 0.6: {'ok' if ratio >= 0.6 else 'MISSED'})"
          f"; {n_pg} rows stored in PostgreSQL")  # fmt: skip
    print()
    print(f"(c) visibility in PostgreSQL after the 200 ({vis['n']:.0f} requests, "
          f"{a.clients} clients, {vis['rps']:.0f} req/s; poller every 5 ms)")  # fmt: skip
    print(f"    {'p50':>10}{'p99':>10}{'max':>10}{'never seen':>12}")
    print(f"    {vis['p50'] * 1e3:>8.0f}ms{vis['p99'] * 1e3:>8.0f}ms{vis['max'] * 1e3:>8.0f}ms"
          f"{vis['missing']:>12.0f}")  # fmt: skip
    ok = vis["p99"] <= 2.0 and vis["missing"] == 0
    print(f"    target p99 ≤ 2 s, none missing: {'ok' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
