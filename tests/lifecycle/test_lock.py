"""One retrain at a time across processes, at most one per N minutes (lifecycle/lock.py), on a
SQLite store (lock file) and a real PostgreSQL (advisory lock), and the CLI that meets it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lifecycle.lock import BUSY_REASON, LastRetrain, admit, last_retrain, throttle_wait
from lifecycle.settings import LifecycleSettings
from store import open_store
from tagger.settings import TagwatchSettings
from tests.lifecycle.conftest import lifecycle_env
from tests.processes import REPO_ROOT


@pytest.fixture(params=["sqlite", "postgresql"])
def lock_settings(request: pytest.FixtureRequest, tmp_path: Path) -> LifecycleSettings:
    """Settings whose store is a SQLite file or a fresh PostgreSQL database (schema made)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    open_store(url).close()  # the predictor creates the schema (meta table included)
    return LifecycleSettings(
        store_url=url, models_dir=tmp_path / "models", retrain_min_interval_minutes=10
    )


def test_one_at_a_time_and_one_per_interval(lock_settings: LifecycleSettings) -> None:
    s = lock_settings
    now = 1_800_000_000.0
    assert last_retrain(s) is None
    with admit(s, "manual", now=now) as first:
        assert first.admitted and first.previous is None
        # another process (or thread) meanwhile: refused at once, not queued
        with admit(s, "webhook JaccardLow", now=now + 1) as second:
            assert not second.admitted and second.reason == BUSY_REASON
        # the running retrain counts from its start: the webhook's debounce sees it
        assert last_retrain(s) == LastRetrain(now, "manual")
    # after it: refused until the interval has passed, and the reason says when
    with admit(s, "cli", now=now + 60) as third:
        assert not third.admitted
        assert "the last retrain (manual) started 60 s ago" in third.reason
        assert "at most one per 10 min" in third.reason and "next allowed in 540 s" in third.reason
    with admit(s, "schedule", now=now + 601) as fourth:
        assert fourth.admitted and fourth.previous == LastRetrain(now, "manual")
    assert last_retrain(s) == LastRetrain(now + 601, "schedule")


def test_a_skipped_retrain_gives_the_slot_back(lock_settings: LifecycleSettings) -> None:
    s = lock_settings
    now = 1_800_000_000.0
    with admit(s, "manual", now=now) as counted:
        assert counted.admitted
    with admit(s, "webhook", now=now + 700) as skipped:
        assert skipped.admitted
        skipped.counts = False  # too little data: no fit, nothing to throttle or debounce
    assert last_retrain(s) == LastRetrain(now, "manual")
    with admit(s, "first ever", now=now + 800) as a:
        a.counts = False
    assert last_retrain(s) == LastRetrain(now, "manual")


def test_throttle_wait_is_pure() -> None:
    last = LastRetrain(1000.0, "cli")
    assert throttle_wait(None, 15, 1000.0) == 0
    assert throttle_wait(last, 0, 1000.0) == 0  # 0: off
    assert throttle_wait(last, 15, 1000.0 + 60) == 840
    assert throttle_wait(last, 15, 1000.0 + 900) == 0


def test_cli_retrain_while_another_retrain_runs_is_skipped(
    tmp_path: Path, tagwatch_settings: TagwatchSettings
) -> None:
    """``python -m lifecycle retrain`` while a retrain holds the lock (here: this process, as
    the service does): exit 3, "skipped", the reason, nothing recorded."""
    rt = lifecycle_env(tmp_path / "lc", tagwatch_settings.data_dir)
    open_store(rt.settings.store_url).close()
    with admit(rt.settings, "service manual") as held:
        assert held.admitted
        t0 = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "lifecycle", "retrain"],
            capture_output=True, text=True, cwd=REPO_ROOT, env={**os.environ, **rt.env},
            timeout=180,
        )  # fmt: skip
        seconds = time.monotonic() - t0
    assert result.returncode == 3, result.stdout + result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line == f"retrain skipped: {BUSY_REASON}", line
    print(f"CLI retrain while another holds the lock: exit 3 in {seconds:.1f} s: {line}")
    # refused before anything was read or logged: no MLflow database was even created
    assert not (rt.root / "mlflow.db").exists()
