"""The text judgement (drift/text.py) on real questions: control green, later years red, with
the words and the questions behind it; odd text is "not enough text", never an error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from drift.text import GREEN, NOT_ENOUGH, RED, TextRules, oov_words, text_drift, unknown_tags
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tagger.train import Split
from tests.processes import NEW_WORDS


@pytest.fixture(scope="module")
def halves(split: Split) -> tuple[list[str], pd.DataFrame]:
    """(baseline titles, held-back questions): the validation slice in two random halves."""
    val = split.validation
    order = np.random.default_rng(0).permutation(len(val))
    half = len(val) // 2
    return val.iloc[order[:half]]["title"].tolist(), val.iloc[order[half:]]


@pytest.fixture(scope="module")
def questions_2019(tagwatch_settings: TagwatchSettings) -> pd.DataFrame:
    df = load_questions(tagwatch_settings.titles_path)
    return df.loc[df["created_at"].dt.year == 2019]


def test_held_back_baseline_questions_stay_green(halves: tuple[list[str], pd.DataFrame]) -> None:
    baseline, held_back = halves
    for size in (100, 300, 1000):
        for seed in range(3):
            sample = held_back.sample(size, random_state=seed)["title"].tolist()
            result = text_drift(baseline, sample)
            assert result.status == GREEN, (size, seed, result.reason)


def test_a_bin_replaying_baseline_questions_is_judged_against_the_others(
    halves: tuple[list[str], pd.DataFrame],
) -> None:
    baseline, _ = halves
    result = text_drift(baseline, baseline[:500])
    assert result.status == GREEN
    assert result.n_baseline == len(baseline) - 500


def test_2019_questions_are_red_and_named(
    halves: tuple[list[str], pd.DataFrame], questions_2019: pd.DataFrame
) -> None:
    baseline, _ = halves
    sample = questions_2019.sample(1000, random_state=1)
    result = text_drift(baseline, sample["title"].tolist(), sample["url"].tolist())
    assert result.status == RED and result.auc is not None and result.auc > 0.7, result.reason
    words = [w.word for w in result.current_words]
    print(f"2019: AUC {result.auc}; current words {words}")
    assert len(NEW_WORDS & set(words)) >= 3, words
    assert all(w.current_share > w.baseline_share for w in result.current_words)
    assert all(w.baseline_share > w.current_share for w in result.baseline_words)
    assert len(result.typical_questions) == 10
    assert all(q.url.startswith("https://stackoverflow.com/") for q in result.typical_questions)
    assert result.as_dict()["current_words"][0]["word"] == words[0]


@pytest.mark.parametrize(
    "titles",
    [
        ["How do I sort a list in Python?"] * 99,  # fewer than the minimum
        [""] * 500,  # empty titles
        ["{}();"] * 300 + ["$$ <> ??"] * 300,  # no word at all: only code or symbols
    ],
    ids=["99 titles", "empty", "only code"],
)
def test_odd_text_is_not_enough_text(
    halves: tuple[list[str], pd.DataFrame], titles: list[str]
) -> None:
    baseline, _ = halves
    result = text_drift(baseline, titles)
    assert result.status == NOT_ENOUGH and result.auc is None
    assert result.status_code is None and "not enough text" in result.reason


def test_one_repeated_word_is_judged_without_error(halves: tuple[list[str], pd.DataFrame]) -> None:
    baseline, _ = halves
    result = text_drift(baseline, ["flutter"] * 200, rules=TextRules(min_titles=100))
    assert result.status == RED and [w.word for w in result.current_words] == ["flutter"]


def test_unknown_tags_and_oov_words_are_counted() -> None:
    tags = [["python", "pandas"], ["reactjs"], ["python-3.x", "pandas"], []]
    assert unknown_tags(tags, {"python"}, n=2) == [
        {"tag": "pandas", "count": 2, "share": 0.4},
        {"tag": "reactjs", "count": 1, "share": 0.2},
    ]
    words = oov_words(["Flutter app crashes", "flutter and the widget", "the 2 of us"], {"app"})
    assert words[0] == {"word": "flutter", "count": 2}
    assert {"the", "2", "of"}.isdisjoint(w["word"] for w in words)
