"""The drift job is a reader (issue 9, defect 10): it opens the store read-only, never creates
one, and its saved counts belong to one store: a recreated store or a state file of the wrong
shape means a cold start with a warning, never a wrong judgement or a traceback forever."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from drift.settings import DriftSettings
from drift.state import STATE_FILE, DriftState, load_state, save_state
from store import SQLiteStore, StoreError, open_store
from tests.drift.conftest import DriftCase, drift_env
from tests.processes import run_module


def test_missing_store_fails_clearly_and_creates_nothing(
    drift_settings: DriftSettings, tmp_path: Path
) -> None:
    db = tmp_path / "store.sqlite3"
    env = drift_env(drift_settings, TAGWATCH_STORE_URL=f"sqlite:///{db}")
    done = run_module("drift", "run-once", env=env)
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "no such store" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not db.exists(), "a reader must never create the store"
    assert not (drift_settings.reports_dir / "latest.html").exists()


def test_reader_opens_the_store_read_only(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite3"
    SQLiteStore(db).close()
    reader = open_store(f"sqlite:///{db}", readonly=True)
    assert reader.count() == 0
    with pytest.raises(Exception, match="readonly"):
        reader._conn().execute("DELETE FROM predictions")  # type: ignore[attr-defined]
    with pytest.raises(StoreError, match="no such store"):
        open_store(f"sqlite:///{tmp_path / 'other.sqlite3'}", readonly=True)
    assert not (tmp_path / "other.sqlite3").exists()


def test_read_only_file_can_be_judged(case: DriftCase) -> None:
    case.replay(case.split.holdout.iloc[:300], per_bin=150)
    case.store.close()
    db = Path(case.settings.store_url.removeprefix("sqlite:///"))
    SQLiteStore(db).close()  # checkpointed by the writer's close
    os.chmod(db, stat.S_IRUSR | stat.S_IRGRP)
    try:
        result, _ = case.run(case.day0 + pd.Timedelta(days=3))
    finally:
        os.chmod(db, stat.S_IRUSR | stat.S_IWUSR)
    assert result.ok and result.bins_judged == 2


def test_recreated_store_means_a_cold_start_with_a_warning(
    case: DriftCase, caplog: pytest.LogCaptureFixture
) -> None:
    db = Path(case.settings.store_url.removeprefix("sqlite:///"))
    holdout = case.split.holdout
    case.replay(holdout.iloc[:400], per_bin=100)
    first, _ = case.run(case.day0 + pd.Timedelta(days=5))
    assert first.ok and first.rows_analysed == 400
    case.store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    fresh = SQLiteStore(db)  # seq starts again at 1
    case.replay(holdout.iloc[:200], per_bin=100, into=fresh, prefix="new")
    fresh.close()
    with caplog.at_level(logging.WARNING, logger="drift"):
        second, _ = case.run(case.day0 + pd.Timedelta(days=5))
    assert "recreated" in caplog.text
    # only the new store's rows: the old counts are gone, the new rows are all read
    assert second.ok and second.rows_analysed == 200 and second.new_rows == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"fingerprint": "fp", "last_seq": "12", "bins": {}},
        {"fingerprint": "fp", "last_seq": 3, "bins": []},
        {"fingerprint": "fp", "last_seq": 3, "bins": {"5": {"rows": "x"}}},
        {"fingerprint": "fp", "last_seq": 3, "bins": {"5": {"rows": 1, "hist": {"a": [1]}}}},
        {"fingerprint": "fp", "last_seq": 3, "bins": {"x": {}}},
        {"fingerprint": 7, "last_seq": 3, "bins": {}},
        {"fingerprint": "fp", "last_seq": True, "bins": {}},
        {"fingerprint": "fp", "last_seq": 3, "bins": {}, "store_id": 5},
        [1, 2, 3],
        "a string",
    ],
)
def test_state_of_the_wrong_shape_is_a_cold_start(
    tmp_path: Path, payload: object, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / STATE_FILE).write_text(json.dumps(payload))
    with caplog.at_level(logging.WARNING):
        state = load_state(tmp_path, "fp", "meta:abc")
    assert state == DriftState("fp", store_id="meta:abc")
    assert "cold start" in caplog.text


def test_state_round_trip_keeps_the_store_identity(tmp_path: Path) -> None:
    counts = {"fb_questions": 0, "fb_tags": 0, "fb_unknown": 0}
    bins = {7: {"rows": 2, "hist": {"oov_ratio": {"0.1": 2}}, **counts}}
    save_state(tmp_path, DriftState("fp", last_seq=9, bins=bins, store_id="meta:abc"))
    assert load_state(tmp_path, "fp", "meta:abc") == DriftState("fp", 9, bins, "meta:abc")
    assert load_state(tmp_path, "fp", "meta:other").last_seq == 0


def test_bad_state_then_good_runs(case: DriftCase) -> None:
    case.replay(case.split.holdout.iloc[:300], per_bin=150)
    case.settings.state_dir.mkdir(parents=True)
    (case.settings.state_dir / STATE_FILE).write_text(
        '{"fingerprint": 1, "last_seq": {}, "bins": 3}'
    )
    for _ in range(2):  # the first run replaces the bad file: no traceback forever
        result, _ = case.run(case.day0 + pd.Timedelta(days=3))
        assert result.ok and result.bins_judged == 2


def test_scheduled_runs_wait_for_the_predictor_to_create_the_store(tmp_path: Path) -> None:
    from drift.__main__ import store_missing

    db = tmp_path / "s.sqlite3"
    assert store_missing(f"sqlite:///{db}") and store_missing(str(db))
    SQLiteStore(db).close()
    assert not store_missing(f"sqlite:///{db}") and not store_missing(str(db))
    assert not store_missing("postgresql://host/db")  # not a file: the run reports errors
