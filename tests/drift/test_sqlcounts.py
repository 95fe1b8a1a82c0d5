"""Per-bin counts in SQL equal the pandas path's, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from drift import sqlcounts
from drift.histograms import NAN_KEY, count_rows, merge
from drift.settings import DriftSettings
from drift.state import STATE_FILE
from store import FeedbackRecord, PredictionRecord, PredictionStore, open_store
from store.schema import predictions
from tagger.artefact import MODEL_FILE
from tests.drift.conftest import run_job

DAY = 86_400
DAY_NS = DAY * 10**9
T0 = 1_772_409_600  # 2026-03-02 00:00 UTC, a bin edge
CATEGORIES = ["python", "java", "c#", "(none)"]
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(name, store URL) of an empty store of each backend."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        yield "postgresql", request.getfixturevalue("postgres_url")


@pytest.fixture
def writer(backend: tuple[str, str]) -> Iterator[PredictionStore]:
    store = open_store(backend[1])
    yield store
    store.close()


def _edge_values() -> list[float]:
    """Values on and around every 0.05 bucket edge, computed the ways floats arise."""
    out: list[float] = []
    for k in range(-25, 45):
        for v in (k * 0.05, k / 20, 0.05 * k + 0.0, sum([0.05] * k) if k > 0 else 0.0):
            out += [v, float(np.nextafter(v, -np.inf)), float(np.nextafter(v, np.inf))]
    return [*out, 0.1 + 0.2, 0.3, 0.15, 0.35, 0.7, 1e-10, -1e-10, 0.999999999, 12345.678]


def _records(
    n: int, seed: int, start: float = T0, days: int = 3, prefix: str = "r", at_edges: bool = True
) -> list[Any]:
    """Rows over ``days`` days: edge values, bin-edge timestamps, three model versions."""
    rng = np.random.default_rng(seed)
    values = _edge_values()
    tags = ["python", "java", "c#", "(none)", "other", "rust", "go", ""]
    records = []
    for i in range(n):
        if at_edges and i % 10 == 0:  # just before / on / just after a day edge
            edge = float(start + DAY * int(rng.integers(1, days)))
            created = [np.nextafter(edge, 0), edge, np.nextafter(edge, np.inf)][i % 3]
        else:
            created = start + float(rng.uniform(0, days * DAY))
        features = {
            "title_chars": int(rng.choice([-7, 0, 4, 5, 6, 9, 10, 150, 10**6])),
            "body_chars": int(rng.integers(-100, 5000)),
            "n_code_blocks": int(rng.integers(0, 6)),
            "n_links": int(rng.integers(0, 4)),
            "n_tokens": int(rng.integers(0, 80)),
            "oov_ratio": float(values[int(rng.integers(len(values)))]),
            "n_predicted_tags": int(rng.integers(0, 6)),
            "max_score": float(values[int(rng.integers(len(values)))]),
            "top_tag": str(rng.choice(tags)),
        }
        records.append(
            PredictionRecord(
                id=f"{prefix}{i:06d}",
                created_at=float(created),
                title="t",
                body="b",
                tags=[],
                scores={},
                inference_seconds=0.001,
                model_version=["served", "served", "old", "benchmark"][i % 4],
                features=features,
            )
        )
    return records


def _feedback(records: list[Any], every: int = 3) -> list[FeedbackRecord]:
    return [
        FeedbackRecord(
            prediction_id=r.id,
            tags=["a", "b", "c"][: i % 4],  # 0 tags: a question without usable feedback
            coverage=0.0,
            jaccard=0.0,
            n_unknown_tags=i % 3 if i % 4 else 0,
            created_at=r.created_at + 60,
        )
        for i, r in enumerate(records)
        if i % every == 0
    ]


def _save(store: PredictionStore, records: list[Any], feedback: list[FeedbackRecord]) -> None:
    store.save_predictions(records)
    for f in feedback:
        store.save_feedback(f)


def _pandas_counts(
    store: PredictionStore, start: float, end: float, after: int = 0, exclude: tuple[str, ...] = ()
) -> dict[int, Any]:
    df = store.features(start, end, after)
    df = df.loc[~df["model_version"].isin(list(exclude))]
    return count_rows(df, DAY_NS, CATEGORIES)


def _sql_counts(
    store: PredictionStore,
    start: float,
    end: float,
    after: int = 0,
    exclude: tuple[str, ...] = (),
    wait: float = 5.0,
) -> sqlcounts.SQLCounts:
    source = sqlcounts.source_for(store)
    assert source is not None
    return sqlcounts.count_new_rows(
        source,
        start_ns=int(start) * 10**9,
        end_ns=int(end) * 10**9,
        bin_ns=DAY_NS,
        after_seq=after,
        categories=CATEGORIES,
        exclude_versions=exclude,
        wait_seconds=wait,
    )


def test_sql_counts_equal_pandas_counts_on_edge_values(writer: PredictionStore) -> None:
    records = _records(1500, seed=1)
    _save(writer, records, _feedback(records))
    for exclude in [(), ("old",)]:
        got = _sql_counts(writer, T0, T0 + 3 * DAY, exclude=exclude)
        want = _pandas_counts(writer, T0, T0 + 3 * DAY, exclude=exclude)
        assert got.pending == {}
        assert got.settled == want
        assert got.rows == sum(b["rows"] for b in want.values()) > 0
    # every edge value's key, compared one by one (a wrong key would only move counts)
    keys = want[T0 // DAY]["hist"]["oov_ratio"]
    assert set(keys) >= {"-25", "-1", "0", "1", "2", "3", "6", "44"}
    assert {b["fb_questions"] for b in want.values()} != {0}


def test_nan_and_infinite_features_get_the_nan_key(backend: tuple[str, str]) -> None:
    """PostgreSQL keeps NaN and ±inf in DOUBLE PRECISION; SQLite keeps ±inf (NaN is NULL)."""
    store = open_store(backend[1])
    try:
        odd = [float("inf"), float("-inf")] + ([float("nan")] if backend[0] != "sqlite" else [])
        records = _records(len(odd) * 4, seed=2, days=1, at_edges=False)
        for i, r in enumerate(records):
            r.features["oov_ratio"] = odd[i % len(odd)]
            r.features["max_score"] = 0.25
        store.save_predictions(records)
        got = _sql_counts(store, T0, T0 + DAY).settled
        want = _pandas_counts(store, T0, T0 + DAY)
        assert got == want
        assert got[T0 // DAY]["hist"]["oov_ratio"] == {NAN_KEY: len(records)}
    finally:
        store.close()


def test_incremental_counts_equal_a_cold_count(writer: PredictionStore) -> None:
    first = _records(600, seed=3)
    _save(writer, first, _feedback(first))
    a = _sql_counts(writer, T0, T0 + 3 * DAY)
    # later rows: more of the same days (arriving late), and of the current day (T0 + 3 d)
    late = _records(400, seed=4, prefix="late")
    current = _records(50, seed=5, start=T0 + 3 * DAY, days=1, prefix="cur", at_edges=False)
    _save(writer, current, [])
    _save(writer, late, _feedback(late, every=2))
    b = _sql_counts(writer, T0, T0 + 3 * DAY, after=a.horizon)
    # the current day's rows came first: nothing after them is remembered yet
    assert b.horizon == a.horizon and b.pending and not b.settled
    incremental = merge(merge({}, a.settled), b.pending)
    cold = _sql_counts(writer, T0, T0 + 3 * DAY)
    assert incremental == merge(merge({}, cold.settled), cold.pending)
    assert incremental == _pandas_counts(writer, T0, T0 + 3 * DAY)
    # a day later the current day is complete: everything is remembered
    c = _sql_counts(writer, T0, T0 + 4 * DAY, after=a.horizon)
    assert c.horizon == c.max_seq and not c.pending
    assert merge(merge({}, a.settled), c.settled) == _pandas_counts(writer, T0, T0 + 4 * DAY)


def _insert_row(conn: sa.Connection, record: Any) -> int:
    values = {
        "id": record.id,
        "created_at": record.created_at,
        "title": record.title,
        "body": record.body,
        "url": None,
        "tags": "[]",
        "scores": "{}",
        "inference_seconds": record.inference_seconds,
        "model_version": record.model_version,
        **record.features,
    }
    return int(
        conn.execute(predictions.insert().values(values).returning(predictions.c.seq)).one()[0]
    )


def test_postgresql_row_committed_late_with_a_smaller_seq_is_counted(postgres_url: str) -> None:
    """Writer A draws seq n, writer B draws n + 1 and commits; A commits after a run read B."""
    from store.sql import engine_url

    store = open_store(postgres_url)
    engine = sa.create_engine(engine_url(postgres_url))
    try:
        records = _records(200, seed=6)
        _save(store, records, _feedback(records))
        base = _sql_counts(store, T0, T0 + 3 * DAY)
        late_a, late_b, late_c, late_d = _records(4, seed=7, prefix="late", at_edges=False)
        with engine.connect() as a:
            a.begin()
            seq_a = _insert_row(a, late_a)
            with engine.begin() as b:
                seq_b = _insert_row(b, late_b)
            assert seq_a < seq_b
            t0 = time.monotonic()
            run = _sql_counts(store, T0, T0 + 3 * DAY, after=base.horizon, wait=0.3)
            assert time.monotonic() - t0 >= 0.3  # it waited for A
            # B is judged now, but not remembered: A may still commit below it
            assert run.horizon == base.horizon and not run.settled
            assert sum(x["rows"] for x in run.pending.values()) == 1
            a.commit()
        # the next run counts A (and B again, since it was not remembered)
        nxt = _sql_counts(store, T0, T0 + 3 * DAY, after=run.horizon)
        assert nxt.horizon == nxt.max_seq == seq_b and not nxt.pending
        assert merge(merge({}, base.settled), nxt.settled) == _pandas_counts(
            store, T0, T0 + 3 * DAY
        )

        # a writer that commits within the wait: the run waits for it and remembers both
        with engine.connect() as a:
            a.begin()
            seq_c = _insert_row(a, late_c)
            with engine.begin() as b:
                seq_d = _insert_row(b, late_d)
            timer = threading.Timer(0.3, a.commit)
            timer.start()
            try:
                done = _sql_counts(store, T0, T0 + 3 * DAY, after=nxt.horizon, wait=10)
            finally:
                timer.join()
        assert seq_c < seq_d
        assert done.horizon == seq_d and not done.pending and done.rows == 2
    finally:
        engine.dispose()
        store.close()


# -- the real job, both paths ---------------------------------------------------------------


@pytest.fixture
def two_versions(tmp_path: Path, models_dir: Path) -> Path:
    """A models directory with the served version and another version's artefact."""
    out = tmp_path / "models"
    out.mkdir()
    served = (models_dir / "LATEST").read_text().strip()
    shutil.copytree(models_dir / served, out / served)
    (out / "LATEST").write_text(served + "\n")
    (out / "old").mkdir()
    (out / "old" / MODEL_FILE).write_bytes(b"an older version's artefact")
    return out


def _saved_bins(settings: DriftSettings) -> dict[str, Any]:
    return dict(json.loads((settings.state_dir / STATE_FILE).read_text())["bins"])


def test_job_paths_give_the_same_counts_and_judgement(
    backend: tuple[str, str], writer: PredictionStore, two_versions: Path, tmp_path: Path
) -> None:
    served = (two_versions / "LATEST").read_text().strip()
    records = _records(3000, seed=8, days=4)
    for r in records:
        if r.model_version == "served":
            r.model_version = served
    _save(writer, records, _feedback(records))
    now = pd.Timestamp((T0 + 4 * DAY + 3600) * 10**9, tz="UTC")
    results, bins = {}, {}
    for path in ("sql", "pandas"):
        settings = DriftSettings(
            models_dir=two_versions,
            store_url=backend[1],
            reports_dir=tmp_path / path / "reports",
            state_dir=tmp_path / path / "state",
            drift_counts=path,
            min_rows_per_bin=50,
        )
        results[path], _ = run_job(settings, now)
        bins[path] = _saved_bins(settings)
    sql, pandas_ = results["sql"], results["pandas"]
    assert sql.ok and pandas_.ok, (sql.error, pandas_.error)
    assert bins["sql"] == bins["pandas"] and len(bins["sql"]) == 4
    # rows of the other known version ("old") are left out by both paths
    assert sql.rows_analysed == pandas_.rows_analysed == 3000 - 750
    assert sql.statuses == pandas_.statuses
    assert sql.values.keys() == pandas_.values.keys()
    for k, v in sql.values.items():
        assert math.isclose(v, pandas_.values[k], rel_tol=1e-12) or (
            math.isnan(v) and math.isnan(pandas_.values[k])
        )
