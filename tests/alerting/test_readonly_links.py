"""The weekly job is a reader with signed links (issue 9, defects 10 and 13)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from alerting.weekly import question_link
from exporter.signing import check_signature
from tests.processes import run_module

SECRET = "weekly-link-secret-0123456789"


def test_links_to_stored_questions_are_signed_and_expire() -> None:
    link = question_link({"id": "p/1", "url": None}, "http://h:8000", SECRET, 3600)
    parts = urlsplit(link)
    assert parts.path == "/predictions/p%2F1"
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert check_signature(SECRET, "p/1", q["expires"], q["signature"]) is None
    assert check_signature(SECRET, "p/2", q["expires"], q["signature"]) == "invalid signature"
    later = time.time() + 7200
    assert check_signature(SECRET, "p/1", q["expires"], q["signature"], now=later) is not None
    assert (
        question_link({"id": "x", "url": "https://so/q/1"}, "http://h", SECRET) == "https://so/q/1"
    )


def test_run_once_without_a_store_fails_in_one_line_and_creates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "missing.sqlite3"
    env = dict(
        os.environ,
        TAGWATCH_STORE_URL=f"sqlite:///{db}",
        TAGWATCH_REPORTS_DIR=str(tmp_path / "reports"),
        TAGWATCH_PROMETHEUS_URL="http://127.0.0.1:9",
    )
    done = run_module("alerting", "run-once", "--no-email", env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: no store at sqlite:///{db} (the predictor creates it)"
    ]
    assert not db.exists()
