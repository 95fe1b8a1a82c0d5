from __future__ import annotations

import math

import pytest

from tagger.metrics import coverage, jaccard, mean_scores


def test_jaccard_and_coverage_basic() -> None:
    assert jaccard(["python", "pandas"], ["python", "csv", "numpy"]) == pytest.approx(1 / 4)
    assert coverage(["python", "pandas"], ["python", "csv", "numpy"]) == pytest.approx(1 / 3)


def test_perfect_and_disjoint() -> None:
    assert jaccard(["a", "b"], ["b", "a"]) == 1.0
    assert coverage(["a", "b"], ["a", "b"]) == 1.0
    assert jaccard(["a"], ["b"]) == 0.0
    assert coverage(["a"], ["b"]) == 0.0


def test_empty_prediction() -> None:
    assert jaccard([], ["python"]) == 0.0
    assert coverage([], ["python"]) == 0.0


def test_both_empty_agree_and_empty_truth_has_no_coverage() -> None:
    assert jaccard([], []) == 1.0
    with pytest.raises(ValueError, match="at least one true tag"):
        coverage(["python"], [])


def test_case_blanks_and_duplicates_do_not_count() -> None:
    assert jaccard(["Python", "python "], ["PYTHON"]) == 1.0
    assert coverage(["c#"], ["C#", "c#", " .net"]) == pytest.approx(1 / 2)


def test_superset_prediction_covers_fully_but_is_penalised_by_jaccard() -> None:
    assert coverage(["a", "b", "c", "d"], ["a"]) == 1.0
    assert jaccard(["a", "b", "c", "d"], ["a"]) == pytest.approx(0.25)


def test_mean_scores_skips_empty_truths() -> None:
    out = mean_scores([["a"], ["b"], ["c"]], [["a"], ["x"], []])
    assert out == {"jaccard": 0.5, "coverage": 0.5, "n": 2}
    empty = mean_scores([], [])
    assert math.isnan(empty["jaccard"]) and empty["n"] == 0
    with pytest.raises(ValueError):
        mean_scores([["a"]], [])
