"""Batched observations must equal prometheus_client's own ``observe``/``inc``."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Histogram

from exporter.metrics import INFERENCE_BUCKETS, RATIO_BUCKETS, PredictorMetrics, _observe_many

FEATURES = {"title_chars": 42, "body_chars": 0, "oov_ratio": 0.2, "max_score": 0.9}


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
    for i in range(20):
        tags = [] if i % 6 == 0 else ["python", "c#"][: 1 + i % 2]
        for m in (m1, m2):
            m.observe_prediction(tags, FEATURES, INFERENCE_BUCKETS[i % 5])
            m.observe_request("predict", 200 if i % 4 else 400, 0.003 * i)
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
    ]:
        want = immediate.get_sample_value(name, labels)
        assert want is not None
        assert batched.get_sample_value(name, labels) == pytest.approx(want, abs=1e-12)
