"""Per-tag quality (tagger.tagquality): outcomes, counts, ratios and statuses on hand-made cases."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tagger.artefact import ArtefactError, load_per_tag
from tagger.tagquality import (
    OUTCOMES,
    PER_TAG_COLUMNS,
    PER_TAG_FILE,
    TagCounts,
    TagQualityRules,
    count_tags,
    counts_table,
    outcomes,
    tag_status,
)

VOCAB = {"python", "javascript", "java", "css"}


def test_outcomes_of_one_feedback() -> None:
    pairs = outcomes(["python", "java"], ["python", "css"], VOCAB)
    assert pairs == [("css", "fn"), ("java", "fp"), ("python", "tp")]
    assert {o for _, o in pairs} <= set(OUTCOMES)


def test_outcomes_count_vocabulary_tags_only() -> None:
    # "js" (a user's rename) and "pandas" (never in the vocabulary) are never labels
    assert outcomes(["javascript"], ["js", "pandas"], VOCAB) == [("javascript", "fp")]
    assert outcomes(["python"], ["Python "], VOCAB) == [("python", "tp")]  # as normalize_tags
    assert outcomes([], [], VOCAB) == []
    assert outcomes([], ["js"], VOCAB) == []


def test_count_tags_lists_every_vocabulary_tag() -> None:
    feedback = [
        (["python"], ["python"]),  # python tp
        (["python", "java"], ["java", "css"]),  # python fp, java tp, css fn
        ([], ["javascript", "js"]),  # javascript fn; js ignored
        (["python"], ["python", "python"]),  # duplicates count once: python tp
    ]
    counts = count_tags(feedback, ["python", "javascript", "java", "css", "c"])
    assert list(counts) == ["python", "javascript", "java", "css", "c"]
    assert counts["python"] == TagCounts("python", tp=2, fp=1, fn=0)
    assert counts["java"] == TagCounts("java", tp=1)
    assert counts["css"] == TagCounts("css", fn=1)
    assert counts["javascript"] == TagCounts("javascript", fn=1)
    assert counts["c"] == TagCounts("c")  # zeros included
    assert "js" not in counts


def test_ratios() -> None:
    c = TagCounts("python", tp=6, fp=2, fn=4)
    assert c.support == 12
    assert c.precision == pytest.approx(6 / 8)
    assert c.recall == pytest.approx(6 / 10)
    assert c.f1 == pytest.approx(12 / 18)
    # F1 is the harmonic mean of precision and recall
    assert c.f1 == pytest.approx(2 * c.precision * c.recall / (c.precision + c.recall))


def test_ratios_when_undefined_are_zero() -> None:
    empty = TagCounts("x")
    assert (empty.support, empty.precision, empty.recall, empty.f1) == (0, 0.0, 0.0, 0.0)
    only_fn = TagCounts("x", fn=3)  # never predicted: precision undefined
    assert (only_fn.precision, only_fn.recall, only_fn.f1) == (0.0, 0.0, 0.0)
    only_fp = TagCounts("x", fp=3)  # never given: recall undefined
    assert (only_fp.precision, only_fp.recall, only_fp.f1) == (0.0, 0.0, 0.0)
    perfect = TagCounts("x", tp=5)
    assert (perfect.precision, perfect.recall, perfect.f1) == (1.0, 1.0, 1.0)


RULES = TagQualityRules(min_support=30, yellow_share=0.75, red_share=0.5, min_baseline_f1=0.2)


def _f1_counts(tp: int, errors: int) -> TagCounts:
    """Counts with the given tp and fp = fn = errors/2 (F1 = 2tp / (2tp + errors))."""
    return TagCounts("t", tp=tp, fp=errors // 2, fn=errors - errors // 2)


def test_status_on_both_sides_of_each_share() -> None:
    # baseline 0.5 (exact in binary, so are the bounds): red below 0.25, yellow below 0.375
    assert _f1_counts(10, 60).f1 == 0.25
    assert tag_status(_f1_counts(10, 60), 0.5, RULES) == "yellow"  # exactly at red: not red
    assert tag_status(_f1_counts(10, 62), 0.5, RULES) == "red"  # just below
    assert _f1_counts(15, 50).f1 == 0.375
    assert tag_status(_f1_counts(15, 50), 0.5, RULES) == "green"  # exactly at yellow
    assert tag_status(_f1_counts(15, 52), 0.5, RULES) == "yellow"
    assert tag_status(TagCounts("t", tp=40), 0.5, RULES) == "green"  # better than baseline


def test_status_needs_support() -> None:
    bad = TagCounts("t", tp=1, fp=14, fn=14)  # F1 ~0.07, support 29
    assert bad.support == 29
    assert tag_status(bad, 0.8, RULES) == "green"  # too few questions: not judged
    worse = TagCounts("t", tp=1, fp=15, fn=14)  # support 30
    assert tag_status(worse, 0.8, RULES) == "red"


def test_status_needs_a_usable_baseline() -> None:
    bad = TagCounts("t", tp=0, fp=50, fn=50)
    assert tag_status(bad, None, RULES) == "green"  # no baseline (older artefact)
    assert tag_status(bad, 0.19, RULES) == "green"  # the model never did well on it
    assert tag_status(bad, 0.2, RULES) == "red"


def test_counts_table_columns_and_rounding() -> None:
    table = counts_table([TagCounts("a", tp=1, fp=2), TagCounts("b")])
    assert tuple(table.columns) == PER_TAG_COLUMNS
    row = table.iloc[0].to_dict()
    assert row == {
        "tag": "a",
        "support": 3,
        "tp": 1,
        "fp": 2,
        "fn": 0,
        "precision": 0.3333,
        "recall": 1.0,
        "f1": 0.5,
    }
    assert table.iloc[1]["f1"] == 0.0


def test_load_per_tag(tmp_path: Path) -> None:
    assert load_per_tag(tmp_path) is None  # an artefact from before per-tag baselines
    table = counts_table([TagCounts("null", tp=1), TagCounts("c++", fp=1)])
    table.to_csv(tmp_path / PER_TAG_FILE, index=False)
    loaded = load_per_tag(tmp_path)
    assert loaded is not None
    assert loaded["tag"].tolist() == ["null", "c++"]  # "null" is a tag, not a missing value
    pd.testing.assert_frame_equal(loaded, table, check_dtype=False)
    (tmp_path / PER_TAG_FILE).write_text("tag,support\npython,3\n")
    with pytest.raises(ArtefactError, match=r"per_tag_metrics\.csv: per-tag table lacks column"):
        load_per_tag(tmp_path)
