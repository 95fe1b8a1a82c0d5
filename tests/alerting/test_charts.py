"""Weekly charts stay scaled to their data: a far-away threshold is named, not drawn."""

from __future__ import annotations

from alerting.charts import line_chart, split_references

LATENCY = {"p50": [0.0011, None, 0.0013], "p99": [0.0020, None, 0.0024]}


def test_a_threshold_far_above_the_data_is_named_not_drawn() -> None:
    drawn, off = split_references(LATENCY, {"SLO 0.25 s": 0.25})
    assert drawn == {} and off == {"SLO 0.25 s": 0.25}


def test_a_threshold_near_the_data_is_drawn() -> None:
    quality = {"jaccard": [0.15, 0.14], "coverage": [0.17, None]}
    drawn, off = split_references(quality, {"validation jaccard": 0.192})
    assert drawn == {"validation jaccard": 0.192} and off == {}


def test_no_data_keeps_every_reference() -> None:
    drawn, off = split_references({"p99": [None, None]}, {"SLO 0.25 s": 0.25})
    assert drawn == {"SLO 0.25 s": 0.25} and off == {}


def test_the_latency_chart_renders_with_the_slo_off_scale() -> None:
    png = line_chart(
        "Predict latency per day (s)", ["Mon 1", "Tue 2", "Wed 3"], LATENCY, {"SLO 0.25 s": 0.25}
    )
    assert png.startswith(b"\x89PNG")
