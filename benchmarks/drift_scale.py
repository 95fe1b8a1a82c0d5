"""Drift job at scale: ``python -m benchmarks.drift_scale [--rows 10000000] [--days 60]``.

Run it as a module from the repository root (not part of ``make test``; ~10-15 min on 2
cores). It fills a throwaway PostgreSQL cluster (``tests/processes.py::start_postgres``, COPY)
and a SQLite file under /tmp (executemany in big transactions) with the same synthetic
predictions (the feature shapes of ``benchmarks/drift.py``, a drift in the last days, three
model versions: one with an artefact, whose rows are left out, one served, one unknown;
feedback on 10 % of the rows; short texts: the job never reads them), then runs the real
``drift.job.run_once`` in a child process per (backend, path):

- cold: no saved counts, the whole window (``--days`` days) counted and judged;
- incremental day: the next day, with the saved counts (its rows are already stored during
  the cold run: they are the cold run's current, partial bin);

peak RSS = the child's VmHWM (its ``getrusage`` ``ru_maxrss``, read with ``os.wait4``, is
printed too: on Linux it also counts the parent's pages held between fork and exec). The
table compares each judgement (statuses and effect sizes of every feature) with the pandas
path's on the same store and window (``--pandas-days``: the pandas path reads ~8 µs a row
here, too slow for the whole 10M rows in this benchmark's time).
Targets: cold <= 60 s, peak RSS <= 500 MB, incremental day <= 5 s.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.drift import FEATURES, make_artefact, synthetic

DAY = 86_400
DAY0 = pd.Timestamp("2026-01-01", tz="UTC")
KNOWN_OLD = "old-known"  # an artefact in models/: its rows are judged against its own baseline
UNKNOWN = "canary"  # no artefact here: its rows stay in
COLUMNS = [
    "id",
    "created_at",
    "title",
    "body",
    "url",
    "tags",
    "scores",
    "inference_seconds",
    "model_version",
    *FEATURES,
]


def day_frame(day: int, n: int, days: int) -> pd.DataFrame:
    """The rows of day ``day`` (deterministic): sorted times, versions, a late drift."""
    rng = np.random.default_rng(1000 + day)
    df = synthetic(n, rng)
    if day >= days - 10:  # the last ten days drift: more unknown words, lower scores
        k = (day - (days - 10) + 1) / 10
        df["oov_ratio"] = np.round(np.clip(df["oov_ratio"] + rng.beta(2, 8, n) * 0.3 * k, 0, 1), 6)
        df["max_score"] = np.round(df["max_score"] * (1 - 0.3 * k), 6)
    start = DAY0.timestamp() + day * DAY
    created = start + np.sort(rng.uniform(0, DAY, n))
    version = np.where(day < days // 4, KNOWN_OLD, "bench")
    version = np.where(rng.random(n) < 0.05, UNKNOWN, version)
    ns = (created * 1e9).astype(np.int64)
    ids = [f"{t:016x}{day:06x}{i:010x}" for i, t in enumerate(ns.tolist())]
    out = pd.DataFrame(
        {
            "id": ids,
            "created_at": created,
            "title": "synthetic question title of a usual length, about fifty chars",
            "body": "",
            "url": None,
            "tags": "[]",
            "scores": "{}",
            "inference_seconds": 0.0004,
            "model_version": version,
        }
    )
    for f in FEATURES:
        out[f] = df[f].to_numpy()
    return out


def feedback_frame(rows: pd.DataFrame, day: int) -> pd.DataFrame:
    rng = np.random.default_rng(5000 + day)
    pick = rows.loc[rng.random(len(rows)) < 0.10]
    n_tags = rng.integers(1, 6, len(pick))
    return pd.DataFrame(
        {
            "prediction_id": pick["id"].to_numpy(),
            "created_at": pick["created_at"].to_numpy() + 60,
            "tags": "[]",
            "coverage": 0.5,
            "jaccard": 0.25,
            "n_tags": n_tags,
            "n_unknown_tags": rng.binomial(n_tags, 0.6 + 0.2 * (day / 60)),
        }
    )


def frames(rows: int, days: int) -> Iterator[tuple[int, pd.DataFrame, pd.DataFrame]]:
    """Every day's predictions and feedback: ``days`` days, then the incremental day."""
    per_day = rows // days
    for day in range(days + 1):
        df = day_frame(day, per_day, days)
        yield day, df, feedback_frame(df, day)


# -- loading --------------------------------------------------------------------------------


def load(pg_url: str | None, sqlite_path: Path | None, rows: int, days: int) -> dict[str, float]:
    """Every day generated once, then COPY into PostgreSQL (a schema created by the store
    itself: Alembic) and executemany into SQLite (one transaction a day); seconds per backend."""
    import sqlite3

    import psycopg
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from store import SQLiteStore, open_store

    seconds = {"generate": 0.0, "postgresql": 0.0, "sqlite": 0.0}
    pg = lite = None
    if pg_url is not None:
        open_store(pg_url).close()  # the predictor's migration: the real schema
        pg = psycopg.connect(pg_url, autocommit=True)
    if sqlite_path is not None:
        SQLiteStore(sqlite_path).close()
        lite = sqlite3.connect(sqlite_path)
        lite.execute("PRAGMA synchronous=OFF")
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    t = time.perf_counter()
    for _, df, fb in frames(rows, days):
        t1 = time.perf_counter()
        seconds["generate"] += t1 - t
        for table, frame in (("predictions", df.drop(columns=["url"])), ("feedback", fb)):
            if pg is not None:
                sink = io.BytesIO()  # TSV without quotes (no tab, quote or newline in values)
                pcsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), sink, options)
                cols = ", ".join(frame.columns)
                with pg.cursor() as cur, cur.copy(f"COPY {table} ({cols}) FROM STDIN") as cp:
                    cp.write(sink.getvalue())
        t2 = time.perf_counter()
        seconds["postgresql"] += t2 - t1
        if lite is not None:
            with lite:
                for table, frame in (("predictions", df), ("feedback", fb)):
                    marks = ", ".join("?" * len(frame.columns))
                    lite.executemany(
                        f"INSERT INTO {table} ({', '.join(frame.columns)}) VALUES ({marks})",
                        frame.itertuples(index=False, name=None),
                    )
        t = time.perf_counter()
        seconds["sqlite"] += t - t2
    if pg is not None:
        t1 = time.perf_counter()
        pg.execute("VACUUM (FREEZE, ANALYZE) predictions")  # what autovacuum does later
        pg.execute("VACUUM (FREEZE, ANALYZE) feedback")
        pg.close()
        seconds["postgresql"] += time.perf_counter() - t1
    if lite is not None:
        t1 = time.perf_counter()
        lite.execute("ANALYZE")
        lite.close()
        seconds["sqlite"] += time.perf_counter() - t1
    return seconds


# -- one job run per child process ----------------------------------------------------------


def child(args: dict[str, Any]) -> dict[str, Any]:
    """In a fresh interpreter: the cold run, then the next day's, as the scheduler does."""
    import logging
    import warnings

    os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(level=logging.WARNING, force=True)
    warnings.filterwarnings("ignore")
    from prometheus_client import CollectorRegistry

    from drift.job import run_once
    from drift.metrics import DriftMetrics
    from drift.settings import DriftSettings

    settings = DriftSettings(**args["settings"])
    shutil.rmtree(settings.state_dir, ignore_errors=True)
    metrics = DriftMetrics(CollectorRegistry())
    out: dict[str, Any] = {}
    for name, now in (("cold", args["now"]), ("incremental", args["later"])):
        r = run_once(settings, metrics, now=pd.Timestamp(now))
        if not r.ok:
            raise SystemExit(f"{name} run failed: {r.error}")
        out[name] = {
            "seconds": r.duration_seconds,
            "count_seconds": r.count_seconds,
            "path": r.counts_path,
            "rows": r.new_rows,
            "analysed": r.rows_analysed,
            "statuses": {f: s[0] for f, s in r.statuses.items()},
            "values": r.values,
        }
    out["vmhwm_mb"] = _vmhwm_mb()
    return out


def _vmhwm_mb() -> float:
    """Peak RSS of this process since its exec (ru_maxrss of a child forked from a big parent
    starts at the parent's size: Linux keeps the high-water mark across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_child(settings: dict[str, Any], now: pd.Timestamp, later: pd.Timestamp) -> dict[str, Any]:
    payload = json.dumps({"settings": settings, "now": str(now), "later": str(later)})
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.drift_scale", "--child", payload], stdout=out
        )
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"drift job child failed ({p.returncode}) for {settings}")
        out.seek(0)
        result: dict[str, Any] = json.loads(out.read().strip().splitlines()[-1])
    # the child's own high-water mark; getrusage's ru_maxrss (os.wait4) also counts the
    # parent's pages the child had between fork and exec
    result["peak_mb"] = result.pop("vmhwm_mb")
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024
    return result


def same_judgement(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a["statuses"] != b["statuses"] or a["values"].keys() != b["values"].keys():
        return False
    return all(
        math.isclose(v, b["values"][k], rel_tol=1e-9, abs_tol=1e-12)
        or (math.isnan(v) and math.isnan(b["values"][k]))
        for k, v in a["values"].items()
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--backends", default="postgresql,sqlite")
    ap.add_argument(
        "--pandas-days",
        type=int,
        default=7,
        help="window of the pandas path runs (the SQL path runs on it too, to compare)",
    )
    ap.add_argument("--tmp", default="/tmp", help="where the cluster and the SQLite file go")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return
    if not hasattr(__import__("drift"), "__path__"):
        raise SystemExit(
            "run as a module from the repository root: python -m benchmarks.drift_scale"
        )
    from tests.processes import start_postgres

    root = Path(tempfile.mkdtemp(prefix="drift-scale-", dir=a.tmp))
    server = None
    try:
        make_artefact(root / "models", np.random.default_rng(7))
        (root / "models" / KNOWN_OLD).mkdir()
        (root / "models" / KNOWN_OLD / "model.joblib").write_bytes(b"placeholder")
        urls: dict[str, str] = {}
        backends = a.backends.split(",")
        if "postgresql" in backends:
            urls["postgresql"], server = start_postgres(Path(a.tmp), fast=True)
        if "sqlite" in backends:
            urls["sqlite"] = f"sqlite:///{root / 'store.sqlite3'}"
        seconds = load(
            urls.get("postgresql"),
            root / "store.sqlite3" if "sqlite" in urls else None,
            a.rows,
            a.days,
        )
        total = a.rows // a.days * (a.days + 1)
        print(
            f"{total:,} predictions generated in {seconds['generate']:.0f} s, loaded in "
            + ", ".join(f"{b} {seconds[b]:.0f} s" for b in urls),
            flush=True,
        )

        now = DAY0 + pd.Timedelta(days=a.days, hours=1)
        later = now + pd.Timedelta(days=1)
        results: dict[tuple[str, str, int], dict[str, Any]] = {}
        full, small = a.days + 1, min(a.pandas_days, a.days + 1)  # full: every stored row
        runs = [("sql", full), ("sql", small), ("pandas", small)]
        for backend, url in urls.items():
            for path, window in dict.fromkeys(runs):
                settings = {
                    "models_dir": str(root / "models"),
                    "store_url": url,
                    "reports_dir": str(root / backend / path / str(window) / "reports"),
                    "state_dir": str(root / backend / path / str(window) / "state"),
                    "window_days": window,
                    "max_bins": a.days,
                    "drift_counts": path,
                }
                r = run_child(settings, now, later)
                results[backend, path, window] = r
                print(
                    f"{backend} {path} {window} days: cold {r['cold']['seconds']:.1f} s "
                    f"(counting {r['cold']['count_seconds']:.1f} s), incremental "
                    f"{r['incremental']['seconds']:.1f} s, peak {r['peak_mb']:.0f} MB "
                    f"(ru_maxrss {r['ru_maxrss_mb']:.0f} MB)",
                    flush=True,
                )
    finally:
        if server is not None:
            server.destroy()
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"\n{a.rows:,} predictions over {a.days} days (+1 incremental day); "
        "judgement compared with the pandas path on the same backend and window\n"
    )
    head = (
        f"{'backend':<11}{'path':<7}{'days':>5}{'rows counted':>13}{'cold s':>8}{'(counting)':>11}"
        f"{'peak RSS MB':>12}{'incr. day s':>12}{'(counting)':>11}  same judgement"
    )
    print(head)
    for (backend, path, window), r in results.items():
        ref = results.get((backend, "pandas", window))
        same = (
            "-"
            if ref is None
            else str(
                same_judgement(r["cold"], ref["cold"])
                and same_judgement(r["incremental"], ref["incremental"])
            )
        )
        c, i = r["cold"], r["incremental"]
        print(
            f"{backend:<11}{path:<7}{window:>5}{c['analysed']:>13,}{c['seconds']:>8.1f}"
            f"{c['count_seconds']:>11.1f}{r['peak_mb']:>12.0f}{i['seconds']:>12.1f}"
            f"{i['count_seconds']:>11.1f}  {same}"
        )
    pg, lite = results.get(("postgresql", "sql", full)), results.get(("sqlite", "sql", full))
    if pg is not None and lite is not None:
        equal = same_judgement(pg["cold"], lite["cold"])
        print(f"\nPostgreSQL and SQLite, SQL path, {full} days: same judgement {equal}")
    print("\ntargets: cold <= 60 s, peak RSS <= 500 MB, incremental day <= 5 s")


if __name__ == "__main__":
    main()
