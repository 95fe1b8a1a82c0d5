"""Feedback has provenance (issue 15): the feedback token, open mode, ids signed by the stack.

The app level (Flask's test client, a real SQLite store); the same through the real processes
and nginx: tests/exporter/test_feedback_acceptance.py."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from exporter.credentials import load_credentials
from exporter.settings import PredictorSettings
from store import new_prediction_id
from tests.exporter.conftest import FEEDBACK, ID_KEY
from tests.exporter.test_api import predict

TAGS = {"tags": ["python"]}


def rows(settings: PredictorSettings, table: str) -> list[tuple]:
    db = settings.store_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT prediction_id, source FROM {table}").fetchall()
    finally:
        conn.close()


def settle(app: Flask) -> None:
    """The writer has stored what was queued (feedback is read back from the file)."""
    writer = app.extensions["tagwatch"].writer
    deadline = time.monotonic() + 5
    while writer.pending and time.monotonic() < deadline:
        time.sleep(0.02)


def test_feedback_without_or_with_a_wrong_token_is_401(
    client: FlaskClient, app: Flask, predictor_settings: PredictorSettings
) -> None:
    pid = predict(client)["prediction_id"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic eA=="}):
        resp = client.post("/feedback", headers=headers, json={"prediction_id": pid, **TAGS})
        assert resp.status_code == 401, resp.get_json()
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "feedback token" in resp.get_json()["error"]
    ok = client.post("/feedback", headers=FEEDBACK, json={"prediction_id": pid, **TAGS})
    assert ok.status_code == 200, ok.get_json()
    settle(app)
    assert rows(predictor_settings, "feedback") == [(pid, "token")]


def test_open_mode_accepts_feedback_without_a_token_and_records_it(
    predictor_settings: PredictorSettings, make_app: Callable[..., Flask]
) -> None:
    settings = predictor_settings.model_copy(update={"feedback_auth": "open"})
    app = make_app(settings)
    client = app.test_client()
    anonymous, tokened = predict(client)["prediction_id"], predict(client)["prediction_id"]
    assert client.post("/feedback", json={"prediction_id": anonymous, **TAGS}).status_code == 200
    resp = client.post("/feedback", headers=FEEDBACK, json={"prediction_id": tokened, **TAGS})
    assert resp.status_code == 200
    wrong = client.post(
        "/feedback", headers={"Authorization": "Bearer nope"}, json={"prediction_id": tokened}
    )
    assert wrong.status_code == 401  # a wrong credential is an error, not anonymity
    settle(app)
    assert sorted(rows(settings, "feedback")) == sorted([(anonymous, "open"), (tokened, "token")])


def test_token_mode_without_a_token_file_closes_feedback_and_says_how(
    predictor_settings: PredictorSettings, make_app: Callable[..., Flask]
) -> None:
    settings = predictor_settings.model_copy(update={"feedback_token_file": None})
    assert any("TAGWATCH_FEEDBACK_TOKEN_FILE" in p for p in load_credentials(settings).fatal)
    client = make_app(settings).test_client()
    pid = predict(client)["prediction_id"]
    resp = client.post("/feedback", headers=FEEDBACK, json={"prediction_id": pid, **TAGS})
    assert resp.status_code == 503
    error = resp.get_json()["error"]
    assert "TAGWATCH_FEEDBACK_TOKEN_FILE" in error and "TAGWATCH_FEEDBACK_AUTH=open" in error


def test_made_up_ids_are_404_at_once_and_nothing_is_kept(
    client: FlaskClient, app: Flask, predictor_settings: PredictorSettings
) -> None:
    """With an id secret, an id the stack never minted is refused before any store access:
    neither a recent-looking one nor a forged tag is kept pending (before: 202, 1,000 rows)."""
    real = predict(client)["prediction_id"]
    assert len(real) == 48
    recent_unsigned = new_prediction_id()  # looks fresh, no tag
    other_stack = new_prediction_id(b"another stack's secret 0123456789")
    forged = real[:32] + ("0" if real[32] != "0" else "1") + real[33:]
    for pid in (recent_unsigned, other_stack, forged, "x" * 48, "nope"):
        resp = client.post("/feedback", headers=FEEDBACK, json={"prediction_id": pid, **TAGS})
        assert resp.status_code == 404, (pid, resp.get_json())
        assert resp.get_json()["field"] == "prediction_id"
    fresh = new_prediction_id(ID_KEY)  # minted by this stack, not stored yet: in flight
    resp = client.post("/feedback", headers=FEEDBACK, json={"prediction_id": fresh, **TAGS})
    assert resp.status_code == 202
    settle(app)
    assert rows(predictor_settings, "feedback_pending") == [(fresh, "token")]
    assert rows(predictor_settings, "feedback") == []


def test_an_untagged_id_served_before_the_secret_was_set_still_takes_feedback(
    predictor_settings: PredictorSettings, make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    before = make_app(predictor_settings.model_copy(update={"id_secret_file": None}))
    old = predict(before.test_client())["prediction_id"]
    assert len(old) == 32
    settle(before)
    client = make_app(predictor_settings).test_client()
    resp = client.post("/feedback", headers=FEEDBACK, json={"prediction_id": old, **TAGS})
    assert resp.status_code == 200, resp.get_json()


def test_an_unreadable_id_secret_stops_serve(
    predictor_settings: PredictorSettings, tmp_path: Path
) -> None:
    short = tmp_path / "short"
    short.write_text("too short")
    settings = predictor_settings.model_copy(update={"id_secret_file": short})
    problems = load_credentials(settings).fatal
    assert len(problems) == 1 and "TAGWATCH_ID_SECRET_FILE" in problems[0]


@pytest.mark.parametrize("rate", [0.5, 2.0, 20.0])
def test_nginx_conf_limits_per_address_and_exempts_the_token(tmp_path: Path, rate: float) -> None:
    from exporter.proxy import render_nginx_conf

    settings = PredictorSettings(rate_limit_per_second=rate, rate_limit_burst=7)
    conf = render_nginx_conf(settings, tmp_path, tmp_path / "s.sock", False, "tok-en_123")
    assert "'Bearer tok-en_123' '';" in conf
    assert "limit_req zone=perclient burst=7 nodelay;" in conf
    assert ("rate=30r/m" if rate == 0.5 else f"rate={int(rate)}r/s") in conf
    assert f"Retry-After {2 if rate == 0.5 else 1} always" in conf
    off = render_nginx_conf(
        settings.model_copy(update={"rate_limit_per_second": 0}), tmp_path, tmp_path / "s", False
    )
    assert "limit_req" not in off
    with pytest.raises(RuntimeError, match="TAGWATCH_FEEDBACK_TOKEN_FILE"):
        render_nginx_conf(settings, tmp_path, tmp_path / "s", False, "quote'd")


def test_nginx_accepts_the_conf_with_a_real_token(tmp_path: Path) -> None:
    """A token as make-secrets.sh writes it (43 characters) fits nginx's map (nginx -t)."""
    import secrets
    import shutil
    import subprocess

    from exporter.proxy import render_nginx_conf

    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.fail("nginx is not installed (apt-get install nginx-light)")
    for token in (secrets.token_urlsafe(32), secrets.token_urlsafe(150)):
        conf = tmp_path / "nginx.conf"
        text = render_nginx_conf(PredictorSettings(), tmp_path, tmp_path / "s", False, token)
        conf.write_text(text)
        done = subprocess.run(
            [nginx, "-p", str(tmp_path), "-e", "stderr", "-c", str(conf), "-t", "-q"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
