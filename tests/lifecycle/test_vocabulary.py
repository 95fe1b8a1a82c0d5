"""The retrain's reason names the tags it adds to the vocabulary and the tags it drops."""

from __future__ import annotations

from lifecycle.vocabulary import describe_change, vocabulary_change


def test_added_and_dropped_keep_each_models_order() -> None:
    champion = ["c#", "java", "wcf", "python", "silverlight"]
    challenger = ["python", "reactjs", "java", "flutter", "pandas"]
    assert vocabulary_change(champion, challenger) == (
        ["reactjs", "flutter", "pandas"],
        ["c#", "wcf", "silverlight"],
    )
    line = describe_change(champion, challenger, n=2)
    assert line == "vocabulary: added reactjs, flutter (+1 more); dropped c#, wcf (+1 more)"


def test_no_change_and_no_champion() -> None:
    assert describe_change(["a", "b"], ["b", "a"]) == "vocabulary: the same tags"
    assert describe_change(None, ["a", "b"]) == "vocabulary: 2 tags"
    assert vocabulary_change(None, ["a"]) == (["a"], [])
