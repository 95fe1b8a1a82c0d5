"""Feedback for a prediction another worker or replica has not stored yet (issue 10): 202
pending, then stored and counted once by the writers' housekeeping; expired when it never
comes. Retention runs from the same housekeeping."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask
from prometheus_client import CollectorRegistry

from exporter.app import create_app
from exporter.settings import PredictorSettings
from store import SQLiteStore, WriteBehindStore, new_prediction_id
from store.retention import DAY_SECONDS
from tagger.metrics import jaccard
from tests.exporter.conftest import metric
from tests.processes import metric_value, sqlite_rows, start_predictor, stored_ids
from tests.store.test_store import record

QUESTION = {"title": "How do I read a CSV file into a pandas DataFrame in python?"}


def wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - t0


@pytest.fixture
def replicas(
    models_dir: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[Flask, CollectorRegistry]]]:
    """Predictor apps on one SQLite store, each with its own spool (as replicas would be)."""
    apps: list[Flask] = []

    def make(name: str, **settings: object) -> tuple[Flask, CollectorRegistry]:
        registry = CollectorRegistry()
        options: dict[str, object] = {
            "models_dir": models_dir,
            "store_url": f"sqlite:///{tmp_path / 'store.sqlite3'}",
            "store_spool_dir": tmp_path / f"spool-{name}",
            # not about credentials: open feedback, ids without a tag (the behaviour without
            # an id secret; tests/exporter/test_credentials.py has the signed ids)
            "feedback_auth": "open",
            **settings,
        }
        app = create_app(PredictorSettings(**options), registry)  # type: ignore[arg-type]
        apps.append(app)
        return app, registry

    yield make
    for app in apps:
        app.extensions["tagwatch"].writer.close()


def writer(app: Flask) -> WriteBehindStore:
    w: WriteBehindStore = app.extensions["tagwatch"].writer
    return w


def test_feedback_for_a_prediction_queued_by_another_worker_is_stored_once_it_lands(
    replicas: Callable[..., tuple[Flask, CollectorRegistry]],
) -> None:
    (a, reg_a), (b, reg_b) = replicas("a"), replicas("b")
    with writer(a)._write_lock:  # A's writer is busy: its new row stays in A's queue
        pred = a.test_client().post("/predict", json=QUESTION).get_json()
        pid = pred["prediction_id"]
        tags = [pred["tags"][0], "some-unknown-tag"]
        resp = b.test_client().post("/feedback", json={"prediction_id": pid, "tags": tags})
        assert resp.status_code == 202, resp.get_json()
        assert resp.get_json() == {"status": "pending", "prediction_id": pid}
        other = b.test_client().post("/feedback", json={"prediction_id": pid, "tags": ["java"]})
        assert other.status_code == 409
        assert writer(b).get_feedback(pid) is None
    seconds = wait_for(lambda: writer(b).get_feedback(pid) is not None, "feedback stored", 5)
    fb = writer(b).get_feedback(pid)
    assert fb is not None and fb.tags == tags
    assert fb.jaccard == pytest.approx(jaccard(pred["tags"], tags))
    assert fb.coverage == pytest.approx(0.5) and fb.n_unknown_tags == 1
    time.sleep(1.5)  # one more housekeeping round in each: still counted once

    def total(name: str) -> float:
        return metric(reg_a, name) + metric(reg_b, name)

    print(f"\n[feedback] pending feedback stored {seconds:.2f} s after its prediction was queued")
    assert total("tagwatch_feedback_total") == 1
    assert total("tagwatch_feedback_jaccard_ratio_count") == 1
    assert total("tagwatch_feedback_jaccard_ratio_sum") == pytest.approx(fb.jaccard)
    assert total("tagwatch_feedback_unknown_tags_total") == 1
    assert metric(reg_b, "tagwatch_feedback_pending_total") == 1
    # per tag too (issue 17), once: the resolution knows the tags the prediction had
    outcomes = {
        (s.labels["tag"], s.labels["outcome"]): s.value
        for reg in (reg_a, reg_b)
        for m in reg.collect()
        for s in m.samples
        if s.name == "tagwatch_tag_feedback_total" and s.value
    }
    assert outcomes == {(pred["tags"][0], "tp"): 1, **{(t, "fp"): 1 for t in pred["tags"][1:]}}
    # once visible, the same feedback is a duplicate (200), other tags a conflict
    again = b.test_client().post("/feedback", json={"prediction_id": pid, "tags": tags})
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert b.test_client().post(
        "/feedback", json={"prediction_id": pid, "tags": ["java"]}
    ).status_code == 409  # fmt: skip


def test_pending_feedback_whose_prediction_never_comes_expires_and_is_counted(
    replicas: Callable[..., tuple[Flask, CollectorRegistry]], tmp_path: Path
) -> None:
    app, registry = replicas("a", feedback_pending_seconds=1.0)
    pid = new_prediction_id()
    resp = app.test_client().post("/feedback", json={"prediction_id": pid, "tags": ["python"]})
    assert resp.status_code == 202
    wait_for(lambda: metric(registry, "tagwatch_feedback_expired_total") == 1, "expiry", 5)
    db = sqlite3.connect(tmp_path / "store.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM feedback_pending").fetchone()[0] == 0
    db.close()
    assert metric(registry, "tagwatch_feedback_total") == 0
    time.sleep(2.0)  # past the window now: an unknown id
    late = app.test_client().post("/feedback", json={"prediction_id": pid, "tags": ["python"]})
    assert late.status_code == 404


def test_retention_runs_from_the_writer_housekeeping(
    replicas: Callable[..., tuple[Flask, CollectorRegistry]], tmp_path: Path
) -> None:
    store = SQLiteStore(tmp_path / "store.sqlite3")
    now = time.time()
    old = [record(created_at=now - 100 * DAY_SECONDS + i) for i in range(30)]
    ancient = [record(created_at=now - 500 * DAY_SECONDS + i) for i in range(20)]
    recent = record(created_at=now - 3600)
    store.save_predictions([*old, *ancient, recent])
    (_, reg_a), (_, reg_b) = replicas("a"), replicas("b")  # two processes: one prunes

    def total(name: str) -> float:
        return metric(reg_a, name) + metric(reg_b, name)

    wait_for(lambda: total("tagwatch_store_rows_deleted_total") == 20, "rows deleted", 10)
    wait_for(lambda: total("tagwatch_store_rows_blanked_total") == 30, "text blanked", 10)
    assert store.count() == 31
    blanked = store.get_prediction(old[0].id)
    assert blanked is not None and (blanked.title, blanked.body, blanked.url) == ("", "", None)
    assert store.get_prediction(recent.id) == recent
    assert len(store.features(now - 200 * DAY_SECONDS, now)) == 31
    store.close()


@pytest.mark.slow
def test_feedback_for_a_prediction_in_another_replicas_spool(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Two real predictors (gunicorn) on one store, each with its own spool. Replica A serves
    predictions it cannot write (the store is locked) and is killed: they are only in its
    spool. Feedback sent to B: 202. A restarts, replays its spool; the feedback is stored with
    the right Jaccard and counted once across both."""
    db = tmp_path / "store.sqlite3"
    spool_a, spool_b = tmp_path / "spool-a", tmp_path / "spool-b"
    port_a, port_b = free_port(), free_port()
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    a = start_predictor(models_dir, port_a, tmp_path / "a1", db,
                        TAGWATCH_STORE_SPOOL_DIR=str(spool_a))  # fmt: skip
    b = start_predictor(models_dir, port_b, tmp_path / "b", db,
                        TAGWATCH_STORE_SPOOL_DIR=str(spool_b))  # fmt: skip
    procs = [a, b]
    try:
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # A can answer, not write
        preds = [requests.post(f"{url_a}/predict", json=QUESTION, timeout=5).json()
                 for _ in range(3)]  # fmt: skip
        time.sleep(0.3)
        a.signal(9)  # SIGKILL A's master and workers: the rows are only in spool-a
        a.popen.wait(timeout=10)
        lock.execute("ROLLBACK")
        lock.close()
        ids = [p["prediction_id"] for p in preds]
        assert not set(ids) & stored_ids(db)
        tags = ["python", "pandas", "csv"]
        resp = requests.post(f"{url_b}/feedback", json={"prediction_id": ids[0], "tags": tags})
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "pending"
        dup = requests.post(f"{url_b}/feedback", json={"prediction_id": ids[0], "tags": tags})
        assert dup.status_code == 202 and dup.json()["duplicate"] is True
        conflict = requests.post(
            f"{url_b}/feedback", json={"prediction_id": ids[0], "tags": ["java"]}
        )
        assert conflict.status_code == 409
        time.sleep(1.5)  # B's housekeeping ran: the prediction is still nowhere to be seen
        assert feedback_of(db, ids[0]) is None
        t0 = time.monotonic()
        a = start_predictor(models_dir, port_a, tmp_path / "a2", db,
                            TAGWATCH_STORE_SPOOL_DIR=str(spool_a))  # fmt: skip
        procs.append(a)
        wait_for(lambda: feedback_of(db, ids[0]) is not None, "pending feedback stored", 10)
        stored_after = time.monotonic() - t0
        assert set(ids) <= stored_ids(db)
        fb = feedback_of(db, ids[0])
        assert fb is not None and fb[0] == pytest.approx(jaccard(preds[0]["tags"], tags))
        time.sleep(2.5)  # housekeeping rounds and metrics flushes in every worker

        def total(name: str) -> float:
            return sum(
                metric_value(requests.get(f"{u}/metrics", timeout=5).text, name) or 0.0
                for u in (url_a, url_b)
            )

        counted = total("tagwatch_feedback_total")
        histogram = total("tagwatch_feedback_jaccard_ratio_count")
        print(f"\n[feedback] replica A back: pending feedback stored after {stored_after:.2f} s; "
              f"feedback_total {counted:.0f}, jaccard count {histogram:.0f}")  # fmt: skip
        assert counted == 1 and histogram == 1
        ok = requests.post(f"{url_a}/feedback", json={"prediction_id": ids[0], "tags": tags})
        assert ok.status_code == 200 and ok.json()["duplicate"] is True
    finally:
        for p in procs:
            p.stop()


def feedback_of(db: Path, prediction_id: str) -> tuple[float, str] | None:
    rows = sqlite_rows(
        db, "SELECT jaccard, tags FROM feedback WHERE prediction_id = ?", prediction_id
    )
    return (rows[0][0], rows[0][1]) if rows else None
