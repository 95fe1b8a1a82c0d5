"""The predictor's HTTP API: every endpoint, every bad input, and the metrics it moves."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from exporter.settings import PredictorSettings
from exporter.signing import signed_query
from tests.exporter.conftest import AUTH, FEEDBACK, ID_KEY, LINK_SECRET, metric

QUESTION = {
    "title": "How do I read a CSV file into a pandas DataFrame in python?",
    "body": "<p>I tried <code>open()</code> but</p><pre><code>import csv\n</code></pre>"
    '<p>See <a href="https://docs.python.org">docs</a>.</p>',
}


def predict(client: FlaskClient, payload: dict | None = None) -> dict:
    resp = client.post("/predict", json=payload or QUESTION)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_predict_returns_tags_scores_and_version(client: FlaskClient) -> None:
    body = predict(client)
    assert set(body) == {"prediction_id", "tags", "scores", "model_version"}
    assert "python" in body["tags"]
    assert 1 <= len(body["tags"]) <= 5
    assert list(body["scores"]) == body["tags"]
    assert body["model_version"] == "test"
    scores = list(body["scores"].values())
    assert scores == sorted(scores, reverse=True)


def test_predict_stores_question_features_and_time(
    client: FlaskClient, predictor_settings: PredictorSettings
) -> None:
    body = predict(client)
    stored = client.get(f"/predictions/{body['prediction_id']}", headers=AUTH).get_json()
    assert stored["title"] == QUESTION["title"]
    assert stored["body"] == QUESTION["body"]
    assert stored["tags"] == body["tags"]
    assert 0 < stored["inference_seconds"] < 1
    f = stored["features"]
    assert f["n_code_blocks"] == 1 and f["n_links"] == 1
    assert f["title_chars"] == len(QUESTION["title"])
    assert f["top_tag"] == body["tags"][0]
    assert stored["feedback"] is None


def test_predict_metrics(client: FlaskClient, registry: CollectorRegistry) -> None:
    body = predict(client)
    assert metric(registry, "tagwatch_predictions_total") == 1
    assert metric(registry, "tagwatch_inference_seconds_count") == 1
    assert metric(registry, "tagwatch_question_title_chars_sum") == len(QUESTION["title"])
    assert metric(registry, "tagwatch_question_body_chars_sum") == len(QUESTION["body"])
    for tag in body["tags"]:
        assert metric(registry, "tagwatch_predicted_tags_total", {"tag": tag}) == 1
    labels = {"endpoint": "predict", "status": "200"}
    assert metric(registry, "tagwatch_http_requests_total", labels) == 1
    assert metric(registry, "tagwatch_empty_predictions_total") == 0
    assert (
        metric(registry, "tagwatch_model_info", {"version": "test", "trained_until": "2012-01-01"})
        == 1
    )
    assert 0.1 < metric(registry, "tagwatch_model_validation_jaccard_ratio") < 0.4


def test_question_with_no_known_word_gives_an_empty_prediction(
    client: FlaskClient, registry: CollectorRegistry
) -> None:
    body = predict(client, {"title": "¿¿ ??? !!!"})
    assert body["tags"] == []
    assert metric(registry, "tagwatch_empty_predictions_total") == 1


def test_feedback_scores_and_counts_once(client: FlaskClient, registry: CollectorRegistry) -> None:
    pred = predict(client)
    true = [pred["tags"][0], "some-unknown-tag"]
    resp = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": pred["prediction_id"], "tags": true}
    )
    assert resp.status_code == 200
    fb = resp.get_json()
    assert fb["coverage"] == pytest.approx(0.5)
    union = len(set(pred["tags"]) | set(true))
    assert fb["jaccard"] == pytest.approx(1 / union)
    again = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": pred["prediction_id"], "tags": true}
    )
    assert again.status_code == 200
    assert again.get_json()["jaccard"] == fb["jaccard"]
    assert again.get_json()["duplicate"] is True
    assert metric(registry, "tagwatch_feedback_total") == 1
    assert metric(registry, "tagwatch_feedback_tags_total") == 2
    assert metric(registry, "tagwatch_feedback_unknown_tags_total") == 1
    assert metric(registry, "tagwatch_feedback_jaccard_ratio_count") == 1
    assert metric(registry, "tagwatch_feedback_coverage_ratio_sum") == pytest.approx(0.5)
    stored = client.get(f"/predictions/{pred['prediction_id']}", headers=AUTH).get_json()
    assert stored["feedback"]["tags"] == [t.lower() for t in true]


def test_different_second_feedback_conflicts(client: FlaskClient) -> None:
    pred = predict(client)
    pid = pred["prediction_id"]
    assert (
        client.post(
            "/feedback", headers=FEEDBACK, json={"prediction_id": pid, "tags": ["c#"]}
        ).status_code
        == 200
    )
    resp = client.post("/feedback", headers=FEEDBACK, json={"prediction_id": pid, "tags": ["java"]})
    assert resp.status_code == 409
    assert "already has different feedback" in resp.get_json()["error"]
    assert "c#" not in resp.get_data(as_text=True), "a 409 must not echo someone else's feedback"


def test_feedback_tags_are_normalised(client: FlaskClient) -> None:
    pred = predict(client)
    tags = [t.upper() + " " for t in pred["tags"]]
    resp = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": pred["prediction_id"], "tags": tags}
    )
    assert resp.get_json() == {"coverage": 1.0, "jaccard": 1.0}


def test_unknown_prediction_id_is_404(client: FlaskClient) -> None:
    resp = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": "nope", "tags": ["python"]}
    )
    assert resp.status_code == 404
    assert resp.get_json()["field"] == "prediction_id"
    assert client.get("/predictions/nope", headers=AUTH).status_code == 404
    old = f"{10**18:016x}{'0' * 16}"  # minted in 2001: unknown
    resp = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": old, "tags": ["python"]}
    )
    assert resp.status_code == 404


def test_feedback_for_a_fresh_unwritten_id_is_pending(
    client: FlaskClient, registry: CollectorRegistry
) -> None:
    """An id minted recently may sit in another worker's queue or another replica's spool:
    202 pending (stored once it arrives), never 404 nor a retry; other tags conflict."""
    from store import new_prediction_id

    pid = new_prediction_id(ID_KEY)
    resp = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": pid, "tags": ["python", "C#"]}
    )
    assert resp.status_code == 202, resp.get_json()
    assert resp.get_json() == {"status": "pending", "prediction_id": pid}
    again = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": pid, "tags": ["c#", "python"]}
    )
    assert again.status_code == 202
    assert again.get_json() == {"status": "pending", "prediction_id": pid, "duplicate": True}
    other = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": pid, "tags": ["java"]}
    )
    assert other.status_code == 409
    assert "python" not in other.get_data(as_text=True), "a 409 must not echo others' feedback"
    assert metric(registry, "tagwatch_feedback_pending_total") == 1
    assert metric(registry, "tagwatch_feedback_duplicates_total") == 1
    assert metric(registry, "tagwatch_feedback_total") == 0  # counted once its prediction comes


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        ({}, 400, "missing field: title"),
        ({"title": ""}, 400, "title must not be empty"),
        ({"title": "   "}, 400, "title must not be empty"),
        ({"title": 42}, 400, "title must be a string"),
        ({"title": None}, 400, "missing field: title"),
        ({"title": "ok", "body": 3}, 400, "body must be a string"),
        ({"title": "ok", "body": "x" * (64 * 1024 + 1)}, 413, "body is larger than 65536 bytes"),
        ({"title": "ok", "body": "é" * (32 * 1024 + 1)}, 413, "body is larger"),
        ({"title": "x" * 1001}, 413, "title is longer"),
        ({"title": "ok", "url": "ftp://x"}, 400, "url must be"),
        ({"title": "ok", "tilte": "typo"}, 400, "unknown field(s): tilte"),
        (["title"], 400, "must be an object"),
        ("just a string", 400, "must be an object"),
    ],
)
def test_predict_bad_input(
    client: FlaskClient, registry: CollectorRegistry, payload: object, status: int, fragment: str
) -> None:
    resp = client.post("/predict", json=payload)
    assert resp.status_code == status
    assert fragment in resp.get_json()["error"]
    assert metric(registry, "tagwatch_predictions_total") == 0
    labels = {"endpoint": "predict", "status": str(status)}
    assert metric(registry, "tagwatch_http_requests_total", labels) == 1


def test_predict_body_exactly_at_limit_is_accepted(client: FlaskClient) -> None:
    resp = client.post("/predict", json={"title": "python list", "body": "x" * 64 * 1024})
    assert resp.status_code == 200


def test_non_json_and_wrong_content_type(client: FlaskClient) -> None:
    resp = client.post("/predict", data="title=python", content_type="text/plain")
    assert resp.status_code == 415
    assert "application/json" in resp.get_json()["error"]
    resp = client.post("/predict", data="{not json", content_type="application/json")
    assert resp.status_code == 400
    assert "not valid JSON" in resp.get_json()["error"]
    resp = client.post("/feedback", headers=FEEDBACK, data="", content_type="application/json")
    assert resp.status_code == 400


def test_oversized_request_is_413_json(client: FlaskClient) -> None:
    resp = client.post("/predict", data="x" * (1024 * 1024), content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["error"] == "request body too large"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"tags": ["python"]}, "missing field: prediction_id"),
        ({"prediction_id": "", "tags": ["python"]}, "prediction_id must be"),
        ({"prediction_id": 5, "tags": ["python"]}, "prediction_id must be"),
        ({"prediction_id": "x"}, "missing field: tags"),
        ({"prediction_id": "x", "tags": []}, "non-empty list"),
        ({"prediction_id": "x", "tags": "python"}, "non-empty list"),
        ({"prediction_id": "x", "tags": ["python", 3]}, "non-empty strings"),
        ({"prediction_id": "x", "tags": ["python", " "]}, "non-empty strings"),
        ({"prediction_id": "x", "tags": ["a"] * 51}, "more than 50"),
    ],
)
def test_feedback_bad_input(client: FlaskClient, payload: dict, fragment: str) -> None:
    resp = client.post("/feedback", headers=FEEDBACK, json=payload)
    assert resp.status_code == 400
    assert fragment in resp.get_json()["error"]


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    resp = client.get("/nope")
    assert resp.status_code == 404 and "error" in resp.get_json()
    resp = client.get("/predict")
    assert resp.status_code == 405 and "error" in resp.get_json()


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "model_version": "test"}


def test_missing_model_is_not_ready_and_predict_is_503(
    tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    settings = PredictorSettings(
        models_dir=tmp_path / "none", store_url=f"sqlite:///{tmp_path / 's.db'}"
    )
    client = make_app(settings).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "no model trained yet" in ready.get_json()["problems"][0]
    resp = client.post("/predict", json={"title": "python"})
    assert resp.status_code == 503
    assert "model not loaded" in resp.get_json()["error"]


def test_store_failure_never_fails_a_prediction_nor_loses_it(
    app: Flask,
    client: FlaskClient,
    registry: CollectorRegistry,
    predictor_settings: PredictorSettings,
) -> None:
    db = Path(predictor_settings.store_url.removeprefix("sqlite:///"))
    conn = sqlite3.connect(db)
    conn.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    body = predict(client)
    assert body["tags"]
    store = app.extensions["tagwatch"].store
    assert not store.flush(timeout=1.0)  # the writer keeps failing...
    assert metric(registry, "tagwatch_store_errors_total") >= 1
    resp = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": body["prediction_id"], "tags": ["x"]}
    )
    assert resp.status_code == 503
    assert "unavailable" in resp.get_json()["error"]
    assert resp.headers["Retry-After"]
    conn.rollback()  # ...until the lock is released: the queued row is written
    conn.close()
    assert store.flush(timeout=10.0)
    assert store.inner.get_prediction(body["prediction_id"]).tags == body["tags"]


def test_unwritable_store_is_not_ready(
    models_dir: Path, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = PredictorSettings(models_dir=models_dir, store_url=f"sqlite:///{blocker}/s.db")
    client = make_app(settings).test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "store" in ready.get_json()["problems"][0]
    assert client.post("/predict", json={"title": "python list"}).status_code == 200


def test_metrics_pass_promtool(client: FlaskClient, tmp_path: Path) -> None:
    pred = predict(client)
    client.post(
        "/feedback",
        headers=FEEDBACK,
        json={"prediction_id": pred["prediction_id"], "tags": ["python"]},
    )
    client.post("/predict", json={"title": ""})
    text = client.get("/metrics").get_data(as_text=True)
    assert "tagwatch_http_requests_total" in text
    out = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "" and out.stderr.strip() == ""


def test_metrics_and_store_can_be_switched_off(
    models_dir: Path, make_app: Callable[..., Flask]
) -> None:
    settings = PredictorSettings(models_dir=models_dir, metrics_enabled=False, store_enabled=False)
    registry = CollectorRegistry()
    client = make_app(settings, registry).test_client()
    body = predict(client)
    assert body["tags"]
    assert registry.get_sample_value("tagwatch_predictions_total") is None
    resp = client.post(
        "/feedback", headers=FEEDBACK, json={"prediction_id": body["prediction_id"], "tags": ["x"]}
    )
    assert resp.status_code == 503


def test_reading_a_stored_question_needs_a_token_or_a_signed_link(client: FlaskClient) -> None:
    pid = predict(client)["prediction_id"]
    anonymous = client.get(f"/predictions/{pid}")
    assert anonymous.status_code == 401
    assert QUESTION["title"] not in anonymous.get_data(as_text=True)
    wrong = client.get(f"/predictions/{pid}", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.get(f"/predictions/{pid}", headers=AUTH).status_code == 200
    link = client.get(f"/predictions/{pid}?{signed_query(LINK_SECRET, pid, 60)}")
    assert link.status_code == 200 and link.get_json()["title"] == QUESTION["title"]
    expired = client.get(f"/predictions/{pid}?{signed_query(LINK_SECRET, pid, -1)}")
    assert expired.status_code == 403 and "expired" in expired.get_json()["error"]
    other = predict(client)["prediction_id"]  # a signature is for one question only
    reused = client.get(f"/predictions/{other}?{signed_query(LINK_SECRET, pid, 60)}")
    assert reused.status_code == 403 and "signature" in reused.get_json()["error"]
    forged = client.get(f"/predictions/{pid}?{signed_query('another-secret-0123456', pid, 60)}")
    assert forged.status_code == 403
    junk = client.get(f"/predictions/{pid}?expires=soon&signature=%C3%A9")
    assert junk.status_code == 403 and junk.is_json


def test_without_credentials_configured_stored_questions_are_closed(
    models_dir: Path, make_app: Callable[..., Flask]
) -> None:
    app = make_app(PredictorSettings(models_dir=models_dir, store_url="sqlite:///:memory:"))
    resp = app.test_client().get("/predictions/x", headers=AUTH)
    assert resp.status_code == 403
    assert "TAGWATCH_API_TOKEN_FILE" in resp.get_json()["error"]


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deeply_nested_json_is_400_not_500(client: FlaskClient, depth: int) -> None:
    body = '{"title": ' + "[" * depth + "]" * depth + "}"
    resp = client.post("/predict", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert "JSON" in resp.get_json()["error"]


def test_metrics_content_type_has_one_charset(client: FlaskClient) -> None:
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type.count("charset") == 1, content_type


def test_openapi_description_lists_every_route(client: FlaskClient, app: Flask) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {p.replace("{prediction_id}", "<prediction_id>") for p in spec["paths"]}
    routes = {r.rule for r in app.url_map.iter_rules() if r.endpoint != "static"}
    assert documented == routes
