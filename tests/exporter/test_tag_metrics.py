"""Per-tag quality in the real predictor (issue 17): tp/fp/fn per vocabulary tag counted from
feedback, the served artefact's per-tag validation baseline, bounded /metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from exporter.settings import PredictorSettings
from tagger.artefact import load_artefact, load_per_tag
from tests.exporter.conftest import FEEDBACK

pytestmark = pytest.mark.slow

QUESTION = {"title": "How do I read a CSV file into a pandas DataFrame in python?"}
FEEDBACK_TOTAL = "tagwatch_tag_feedback_total"
BASELINE = (
    "tagwatch_model_validation_tag_f1_ratio",
    "tagwatch_model_validation_tag_precision_ratio",
    "tagwatch_model_validation_tag_recall_ratio",
    "tagwatch_model_validation_tag_support",
)


def outcomes_of(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    """Every tag_feedback child: {(tag, outcome): value}."""
    return {
        (s.labels["tag"], s.labels["outcome"]): s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == FEEDBACK_TOTAL
    }


def lines_of(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_feedback_counts_each_vocabulary_tag_outcome_once(
    app: Flask, client: FlaskClient, registry: CollectorRegistry, models_dir: Path
) -> None:
    classes = [str(t) for t in load_artefact(models_dir, "test").model.classes]
    before = outcomes_of(registry)
    assert len(before) == 3 * len(classes) and not any(before.values())  # all at 0 on load
    pred = client.post("/predict", json=QUESTION).get_json()
    predicted = pred["tags"]
    assert predicted and "python" in predicted
    missed = next(t for t in ("java", "c#", "javascript") if t not in predicted)
    given = [predicted[0], missed, "not-a-model-tag"]
    body = {"prediction_id": pred["prediction_id"], "tags": given}
    assert client.post("/feedback", json=body, headers=FEEDBACK).status_code == 200
    expected = {(predicted[0], "tp"): 1.0, (missed, "fn"): 1.0}
    expected.update({(t, "fp"): 1.0 for t in predicted[1:]})
    after = outcomes_of(registry)
    assert {k: v for k, v in after.items() if v} == expected
    assert not any(t == "not-a-model-tag" for t, _ in after)  # a user's tag is never a label
    # the same feedback again is acknowledged, not counted
    again = client.post("/feedback", json=body, headers=FEEDBACK)
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    assert outcomes_of(registry) == after
    # /metrics stays bounded however many tags users send: K tags x 3 outcomes
    for i in range(5):
        other = client.post("/predict", json={"title": f"python list sort {i}"}).get_json()
        junk = {
            "prediction_id": other["prediction_id"],
            "tags": [f"junk-{i}-{j}" for j in range(5)],
        }
        assert client.post("/feedback", json=junk, headers=FEEDBACK).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert len(lines_of(text, FEEDBACK_TOTAL)) == 3 * len(classes)
    assert "junk-" not in text


def test_baseline_gauges_are_the_served_artefacts_table(
    app: Flask, client: FlaskClient, registry: CollectorRegistry, models_dir: Path
) -> None:
    table = load_per_tag(models_dir / "test")
    assert table is not None
    text = client.get("/metrics").get_data(as_text=True)
    for name in BASELINE:
        assert len(lines_of(text, name)) == len(table)
    for row in table.head(10).to_dict("records"):
        labels = {"tag": row["tag"]}
        assert registry.get_sample_value(BASELINE[0], labels) == pytest.approx(row["f1"])
        assert registry.get_sample_value(BASELINE[1], labels) == pytest.approx(row["precision"])
        assert registry.get_sample_value(BASELINE[2], labels) == pytest.approx(row["recall"])
        assert registry.get_sample_value(BASELINE[3], labels) == row["support"]


def test_tag_metrics_switched_off(
    predictor_settings: PredictorSettings, make_app: Callable[..., Flask]
) -> None:
    registry = CollectorRegistry()
    settings = predictor_settings.model_copy(update={"tag_metrics": False})
    client = make_app(settings, registry).test_client()
    pred = client.post("/predict", json=QUESTION).get_json()
    body = {"prediction_id": pred["prediction_id"], "tags": ["python"]}
    assert client.post("/feedback", json=body, headers=FEEDBACK).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert FEEDBACK_TOTAL not in text and "validation_tag" not in text
    assert registry.get_sample_value("tagwatch_feedback_total") == 1
