"""Batched observations must equal prometheus_client's own ``observe``/``inc``; per-tag
feedback series follow the served vocabulary (swaps, multiprocess archives)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import values as pc_values
from prometheus_client.multiprocess import MultiProcessCollector

from exporter.metrics import (
    INFERENCE_BUCKETS,
    RATIO_BUCKETS,
    PredictorMetrics,
    VocabularyFilter,
    _observe_many,
)
from exporter.multiproc import merge_dead_worker
from tagger.tagquality import TagCounts, counts_table
from tests.processes import metric_value

FEATURES = {"title_chars": 42, "body_chars": 0, "oov_ratio": 0.2, "max_score": 0.9}
CARD = {"version": "v1", "validation": {"jaccard": 0.2}}


def test_observe_many_equals_observe() -> None:
    rng = random.Random(0)
    values = [rng.choice([0.0, 0.1, 0.25, 1.0, 7.0]) if i % 5 == 0 else rng.random()
              for i in range(1000)]  # fmt: skip
    values += list(RATIO_BUCKETS)  # exactly on the bounds: le is inclusive
    a, b = CollectorRegistry(), CollectorRegistry()
    ha = Histogram("h", "h", buckets=RATIO_BUCKETS, registry=a)
    hb = Histogram("h", "h", buckets=RATIO_BUCKETS, registry=b)
    for v in values:
        ha.observe(v)
    _observe_many(hb, values[:400])
    _observe_many(hb, values[400:])
    for name in ("h_bucket", "h_count", "h_sum"):
        got = [(s.labels, s.value) for m in b.collect() for s in m.samples if s.name == name]
        want = [(s.labels, s.value) for m in a.collect() for s in m.samples if s.name == name]
        assert len(got) == len(want) > 0
        for (lg, vg), (lw, vw) in zip(got, want, strict=True):
            assert lg == lw and abs(vg - vw) < 1e-9


def test_batched_metrics_equal_immediate_metrics() -> None:
    immediate, batched = CollectorRegistry(), CollectorRegistry()
    m1 = PredictorMetrics(immediate, ["python", "c#"], batch_size=1)
    m2 = PredictorMetrics(batched, ["python", "c#"], batch_size=8)
    for m in (m1, m2):
        m.set_model(CARD, ["python", "c#"])
    for i in range(20):
        tags = [] if i % 6 == 0 else ["python", "c#"][: 1 + i % 2]
        for m in (m1, m2):
            m.observe_prediction(tags, FEATURES, INFERENCE_BUCKETS[i % 5])
            m.observe_request("predict", 200 if i % 4 else 400, 0.003 * i)
            m.observe_tag_feedback(tags, ["python", "java"] if i % 3 else ["c#"])
    lagging = batched.get_sample_value("tagwatch_predictions_total")
    assert lagging is not None and 8 <= lagging < 20  # whole batches applied, the rest queued
    m2.flush()

    def samples(r: CollectorRegistry) -> dict[tuple[str, tuple], float]:
        return {
            (x.name, tuple(sorted(x.labels.items()))): x.value
            for m in r.collect()
            for x in m.samples
            if not x.name.endswith("_created")
        }

    a, b = samples(immediate), samples(batched)
    assert a.keys() == b.keys()
    assert all(abs(a[k] - b[k]) < 1e-9 for k in a)
    for name, labels in [
        ("tagwatch_predictions_total", {}),
        ("tagwatch_empty_predictions_total", {}),
        ("tagwatch_predicted_tags_total", {"tag": "c#"}),
        ("tagwatch_inference_seconds_sum", {}),
        ("tagwatch_inference_seconds_bucket", {"le": "0.0005"}),
        ("tagwatch_http_requests_total", {"endpoint": "predict", "status": "400"}),
        ("tagwatch_http_request_duration_seconds_bucket", {"endpoint": "predict", "le": "0.025"}),
        ("tagwatch_question_oov_ratio_bucket", {"le": "0.2"}),
        ("tagwatch_tag_feedback_total", {"tag": "python", "outcome": "tp"}),
        ("tagwatch_tag_feedback_total", {"tag": "c#", "outcome": "fp"}),
        ("tagwatch_tag_feedback_total", {"tag": "c#", "outcome": "fn"}),
    ]:
        want = immediate.get_sample_value(name, labels)
        assert want is not None
        assert batched.get_sample_value(name, labels) == pytest.approx(want, abs=1e-12)


F1 = "tagwatch_model_validation_tag_f1_ratio"


def _outcome(r: CollectorRegistry, tag: str, outcome: str) -> float | None:
    return r.get_sample_value("tagwatch_tag_feedback_total", {"tag": tag, "outcome": outcome})


def _tag_series(r: CollectorRegistry, name: str) -> set[tuple[str, ...]]:
    return {
        tuple(sorted(s.labels.values())) for m in r.collect() for s in m.samples if s.name == name
    }


def test_tag_feedback_follows_the_served_vocabulary() -> None:
    r = CollectorRegistry()
    m = PredictorMetrics(r, ["js", "python"])
    baseline = counts_table([TagCounts("js", tp=8, fp=2, fn=2), TagCounts("python", tp=3, fp=1)])
    m.set_model(CARD, ["js", "python"], baseline)
    assert len(_tag_series(r, "tagwatch_tag_feedback_total")) == 6  # every child, at 0
    assert _outcome(r, "js", "fn") == 0.0
    assert r.get_sample_value(F1, {"tag": "js"}) == pytest.approx(0.8)
    assert r.get_sample_value("tagwatch_model_validation_tag_support", {"tag": "js"}) == 12
    m.observe_tag_feedback(["js", "python"], ["js", "jquery"])
    m.observe_tag_feedback([], ["python", "js"])
    assert (_outcome(r, "js", "tp"), _outcome(r, "js", "fn")) == (1.0, 1.0)
    assert (_outcome(r, "python", "fp"), _outcome(r, "python", "fn")) == (1.0, 1.0)
    assert _outcome(r, "jquery", "fn") is None  # a user's tag outside the vocabulary: no label
    # a swap: "js" left, "javascript" came; the new model has no baseline for "python"
    m.set_model(CARD, ["python", "javascript"], counts_table([TagCounts("javascript", tp=1)]))
    assert _outcome(r, "js", "tp") is None and r.get_sample_value(F1, {"tag": "js"}) is None
    assert _outcome(r, "javascript", "tp") == 0.0
    assert _outcome(r, "python", "fn") == 1.0  # a kept tag keeps its counter (monotonic)
    assert r.get_sample_value(F1, {"tag": "python"}) is None
    assert r.get_sample_value(F1, {"tag": "javascript"}) == 1.0
    assert len(_tag_series(r, "tagwatch_tag_feedback_total")) == 6
    m.set_model(CARD, ["python", "javascript"], None)  # an artefact without a per-tag table
    assert not _tag_series(r, F1)


def test_tag_metrics_off_declares_nothing() -> None:
    r = CollectorRegistry()
    m = PredictorMetrics(r, ["python"], tag_metrics=False)
    m.set_model(CARD, ["python"], counts_table([TagCounts("python", tp=1)]))
    m.observe_tag_feedback(["python"], ["python"])
    names = {s.name for metric in r.collect() for s in metric.samples}
    assert not {n for n in names if "_tag_" in n}
    assert "tagwatch_feedback_total" in names  # the rest is unchanged


def _as_worker(
    pid: int, vocabulary: Sequence[str], feedback: list[tuple[list[str], list[str]]]
) -> PredictorMetrics:
    """A gunicorn worker serving ``vocabulary`` writes its metric files (real mmap classes)."""
    original = pc_values.ValueClass  # restored as it was: later tests run single-process
    pc_values.ValueClass = pc_values.MultiProcessValue(lambda: pid)
    try:
        m = PredictorMetrics(CollectorRegistry(), vocabulary)
        m.set_model(CARD, vocabulary, counts_table([TagCounts(t, tp=1) for t in vocabulary]))
        for predicted, given in feedback:
            m.observe_tag_feedback(predicted, given)
        return m
    finally:
        pc_values.ValueClass = original


def test_multiprocess_swap_keeps_totals_and_drops_tags_that_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under gunicorn a swap is a new worker: the old one's counters go to the archive, its
    gauges away; /metrics (VocabularyFilter) shows the new vocabulary's series only."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    _as_worker(1001, ["js", "python"], [(["js"], ["js"]), (["python"], ["python"])])
    merge_dead_worker(tmp_path, 1001)  # the old model's worker exited
    m = _as_worker(1002, ["python", "javascript"], [(["python"], ["javascript"])])
    r = CollectorRegistry()
    for collector in m.exposed(MultiProcessCollector(None, path=str(tmp_path))):
        r.register(collector)  # as the predictor's /metrics does
    text = generate_latest(r).decode()
    series = [line for line in text.splitlines() if line.startswith("tagwatch_tag_feedback_total")]
    assert len(series) == 6 and 'tag="js"' not in text  # K x 3, the tag that left is gone
    assert metric_value(text, "tagwatch_tag_feedback_total", 'outcome="tp",tag="python"') == 1
    assert metric_value(text, "tagwatch_tag_feedback_total", 'outcome="fp",tag="python"') == 1
    assert metric_value(text, "tagwatch_tag_feedback_total", 'outcome="fn",tag="javascript"') == 1
    assert metric_value(text, F1, 'tag="javascript"') == 1.0
    # without the filter the archive would still expose the old tag; no worker wrote zeros
    # (they are filled in at read time) nor the baseline gauges (served from memory)
    unfiltered = generate_latest(MultiProcessCollector(CollectorRegistry(), path=str(tmp_path)))
    assert b'tag="js"' in unfiltered
    assert b'outcome="fn",tag="python"' not in unfiltered and b"validation_tag" not in unfiltered
    filtered = VocabularyFilter(MultiProcessCollector(None, path=str(tmp_path)), {"python"})
    kept = [
        s.labels for f in filtered.collect() if f.name == "tagwatch_tag_feedback" for s in f.samples
    ]
    assert {(k["tag"], k["outcome"]) for k in kept} == {("python", o) for o in ("tp", "fp", "fn")}
