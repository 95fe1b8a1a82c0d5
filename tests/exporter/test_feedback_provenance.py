"""Acceptance "No credential" (issue 15), through the real processes: ``python -m exporter
serve`` (nginx, gunicorn, the SQLite store) with the feedback token and the id secret.

Before: feedback needed no credential (3,000 requests in 8.4 s, all 200), and 1,000 made-up
prediction ids got 202 and left 1,000 pending rows for an hour.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.processes import (
    FEEDBACK_AUTH,
    predictor_env,
    run_module,
    sqlite_rows,
    start_predictor,
)

MADE_UP = 1000
QUESTION = {"title": "How do I sort a list of dictionaries by a value in Python?"}


def made_up_ids(n: int) -> list[str]:
    """Ids as a client would invent them: fresh timestamps (inside the pending window), random
    tails, some with the length of a signed id and some without."""
    out = []
    for i in range(n):
        tail = os.urandom(16 if i % 2 else 8).hex()
        out.append(f"{time.time_ns():016x}{tail}")
    return out


@pytest.mark.slow
def test_feedback_needs_the_token_and_made_up_ids_leave_nothing(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    db = tmp_path / "store.sqlite3"
    url = f"http://127.0.0.1:{port}"
    proc = start_predictor(models_dir, port, tmp_path, db, TAGWATCH_FEEDBACK_AUTH="token")
    try:
        session = requests.Session()
        real = session.post(f"{url}/predict", json=QUESTION, timeout=5).json()["prediction_id"]
        assert len(real) == 48, "a signed id: 32 hex digits and a 16-digit tag"
        body = {"prediction_id": real, "tags": ["python"]}
        t0 = time.monotonic()
        anonymous = Counter(
            session.post(f"{url}/feedback", json=body, timeout=5).status_code for _ in range(300)
        )
        anonymous_s = time.monotonic() - t0
        wrong = session.post(
            f"{url}/feedback", json=body, headers={"Authorization": "Bearer guess"}, timeout=5
        )
        assert wrong.status_code == 401
        assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
        ok = session.post(f"{url}/feedback", json=body, headers=FEEDBACK_AUTH, timeout=5)
        assert ok.status_code == 200, ok.text

        t0 = time.monotonic()
        made_up: Counter[int] = Counter()
        for pid in made_up_ids(MADE_UP):  # with the token: the id alone is refused
            r = session.post(
                f"{url}/feedback", json={"prediction_id": pid, "tags": ["python"]},
                headers=FEEDBACK_AUTH, timeout=5,
            )  # fmt: skip
            made_up[r.status_code] += 1
        made_up_s = time.monotonic() - t0
        time.sleep(1.5)  # a housekeeping round of every worker: nothing arrives late
        pending = sqlite_rows(db, "SELECT COUNT(*) FROM feedback_pending")[0][0]
        stored = sqlite_rows(db, "SELECT prediction_id, source FROM feedback")
    finally:
        proc.stop()
    print(
        f"\n[provenance] /feedback without the token: {dict(anonymous)} for 300 requests "
        f"({anonymous_s:.2f} s); {MADE_UP} made-up ids with the token: {dict(made_up)} in "
        f"{made_up_s:.2f} s, {pending} pending rows, feedback rows {stored}"
    )
    assert anonymous == {401: 300}
    assert made_up == {404: MADE_UP}
    assert pending == 0
    assert stored == [(real, "token")]


def test_serve_refuses_to_start_without_the_feedback_token(
    models_dir: Path, tmp_path: Path, free_port: Callable[[], int]
) -> None:
    """Token mode (the default) without TAGWATCH_FEEDBACK_TOKEN_FILE: a clear error at start,
    never a predictor whose feedback is silently closed (or open)."""
    env = predictor_env(models_dir, free_port(), tmp_path / "s.sqlite3", tmp_path / "mp")
    del env["TAGWATCH_FEEDBACK_TOKEN_FILE"]
    env["TAGWATCH_FEEDBACK_AUTH"] = "token"
    done = run_module("exporter", "serve", env={**os.environ, **env}, timeout=60)
    assert done.returncode == 2
    assert "TAGWATCH_FEEDBACK_TOKEN_FILE is not set" in done.stderr
    assert "TAGWATCH_FEEDBACK_AUTH=open" in done.stderr
    env["TAGWATCH_ID_SECRET_FILE"] = str(tmp_path / "missing")
    env["TAGWATCH_FEEDBACK_AUTH"] = "open"
    done = run_module("exporter", "serve", env={**os.environ, **env}, timeout=60)
    assert done.returncode == 2
    assert f"TAGWATCH_ID_SECRET_FILE: cannot read {tmp_path / 'missing'}" in done.stderr
