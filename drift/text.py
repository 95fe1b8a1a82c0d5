"""Text drift: can a classifier tell a bin's titles from the baseline's? (pure functions)

Evidently's text-drift method, joined to tagwatch's tokens: a domain classifier (TF-IDF on
tagger's tokens, which keep ``c#``, ``.net`` and ``node.js`` whole, then a logistic regression)
learns to separate the served model's baseline titles from a bin's titles. Its cross-validated
ROC AUC is the effect size of the feature ``text``: 0.5 when the bin reads like the baseline,
towards 1 when the questions changed. The words it leans on and the questions it finds most
typical of the bin say *what* changed; the out-of-vocabulary words and the user tags the model
does not know (``unknown_tags``) say it more simply.

Measured on the project's data (baseline: a half of the 2011 validation questions, 5 samples a
size; ``benchmarks/text_drift.py`` reprints it): 2011 control bins 0.50-0.54 at 100 titles and
0.51 at 1,900; 2013 0.62 at 100 and 0.72 at 1,900; 2019 0.64 and 0.76; 2020 0.67 and 0.77.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from tagger.text import tokenize

GREEN, YELLOW, RED, NOT_ENOUGH = "green", "yellow", "red", "not enough text"
STATUS_CODES = {GREEN: 0, YELLOW: 1, RED: 2}


@dataclass(frozen=True)
class TextRules:
    """Thresholds and sizes of the text judgement; settings build it (``drift.settings``)."""

    yellow_auc: float = 0.56
    red_auc: float = 0.60
    # and that many standard errors of a no-drift AUC above 0.5 (small bins are noisy)
    yellow_z: float = 4.0
    red_z: float = 5.0
    min_titles: int = 100
    max_titles: int = 5000
    n_words: int = 20
    n_questions: int = 10
    min_word_questions: int = 3
    folds: int = 3
    seed: int = 0


@dataclass(frozen=True)
class WordShare:
    word: str
    current_share: float
    baseline_share: float


@dataclass(frozen=True)
class TypicalQuestion:
    title: str
    url: str
    score: float


@dataclass(frozen=True)
class TextDrift:
    """One bin's text judgement; ``status`` is green, yellow, red or "not enough text"."""

    status: str
    auc: float | None
    n_current: int
    n_baseline: int
    current_words: list[WordShare] = field(default_factory=list)
    baseline_words: list[WordShare] = field(default_factory=list)
    typical_questions: list[TypicalQuestion] = field(default_factory=list)
    reason: str = ""

    @property
    def status_code(self) -> int | None:
        """0/1/2 for the status metric; None when nothing was judged."""
        return STATUS_CODES.get(self.status)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextDrift:
        return cls(
            status=d["status"],
            auc=d.get("auc"),
            n_current=int(d.get("n_current", 0)),
            n_baseline=int(d.get("n_baseline", 0)),
            current_words=[WordShare(**w) for w in d.get("current_words", [])],
            baseline_words=[WordShare(**w) for w in d.get("baseline_words", [])],
            typical_questions=[TypicalQuestion(**q) for q in d.get("typical_questions", [])],
            reason=d.get("reason", ""),
        )


def null_auc_sd(n_current: int, n_baseline: int) -> float:
    """Standard error of the AUC of two samples of the same text (Mann-Whitney U under H0)."""
    n1, n2 = max(n_current, 1), max(n_baseline, 1)
    return math.sqrt((n1 + n2 + 1) / (12.0 * n1 * n2))


def status_of(auc: float, rules: TextRules, n_current: int, n_baseline: int) -> str:
    """Red or yellow needs both an effect (the AUC) and a margin over the noise of its size."""
    z = (auc - 0.5) / null_auc_sd(n_current, n_baseline)
    if auc >= rules.red_auc and z >= rules.red_z:
        return RED
    return YELLOW if auc >= rules.yellow_auc and z >= rules.yellow_z else GREEN


def _documents(titles: Iterable[str]) -> list[str]:
    """Space-joined tokens; a title without any word (only code, only symbols) is dropped."""
    return [" ".join(tokenize(t or "")) for t in titles]


def _sample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    idx = np.arange(n)
    return idx if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))


def text_drift(
    baseline_titles: Sequence[str],
    current_titles: Sequence[str],
    current_urls: Sequence[str] | None = None,
    rules: TextRules | None = None,
) -> TextDrift:
    """Judge one bin's titles against the baseline's; never raises on odd text.

    A title that appears on both sides is dropped from the baseline side: a bin that replays
    baseline questions is then judged against the others, not against itself.
    """
    rules = rules or TextRules()
    urls = list(current_urls) if current_urls is not None else [""] * len(current_titles)
    rng = np.random.default_rng(rules.seed)
    cur_docs = _documents(current_titles)  # each title tokenized once, here
    cur_idx = [i for i, d in enumerate(cur_docs) if d]
    cur_idx = [cur_idx[i] for i in _sample(len(cur_idx), rules.max_titles, rng)]
    cur_titles = [current_titles[i] for i in cur_idx]
    seen = set(cur_titles)
    kept = [
        (t, d)
        for t, d in zip(baseline_titles, _documents(baseline_titles), strict=True)
        if d and t not in seen
    ]
    base_docs = [kept[i][1] for i in _sample(len(kept), rules.max_titles, rng)]
    base = base_docs
    if len(cur_titles) < rules.min_titles or len(base) < rules.min_titles:
        return TextDrift(
            NOT_ENOUGH,
            None,
            len(cur_titles),
            len(base),
            reason=f"not enough text: {len(cur_titles)} titles with words in the bin and "
            f"{len(base)} in the baseline, fewer than {rules.min_titles}",
        )
    docs = base_docs + [cur_docs[i] for i in cur_idx]
    return _classify(docs, len(base), cur_titles, [urls[i] or "" for i in cur_idx], rules)


def _classify(
    docs: list[str], n_base: int, cur: list[str], urls: list[str], rules: TextRules
) -> TextDrift:
    """Out-of-fold probabilities give the AUC and the typical questions; a fit on all, words."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = np.r_[np.zeros(n_base), np.ones(len(cur))]
    vectorizer = TfidfVectorizer(
        tokenizer=str.split, token_pattern=None, lowercase=False, min_df=2, sublinear_tf=True
    )
    try:
        X = vectorizer.fit_transform(docs)
    except ValueError:  # no token in two documents: nothing to learn from
        return TextDrift(
            NOT_ENOUGH,
            None,
            len(cur),
            n_base,
            reason="not enough text: no word appears in two titles",
        )
    clf = LogisticRegression(C=1.0, solver="liblinear", class_weight="balanced")
    folds = StratifiedKFold(rules.folds, shuffle=True, random_state=rules.seed)
    proba = cross_val_predict(clf, X, y, cv=folds, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, proba))
    clf.fit(X, y)
    current_words, baseline_words = _words(vectorizer, clf, X, n_base, rules)
    order = np.argsort(-proba[n_base:], kind="stable")[: rules.n_questions]
    typical = [TypicalQuestion(cur[i], urls[i], round(float(proba[n_base + i]), 4)) for i in order]
    return TextDrift(
        status_of(auc, rules, len(cur), n_base),
        round(auc, 4),
        len(cur),
        n_base,
        current_words,
        baseline_words,
        typical,
        reason=f"ROC AUC {auc:.3f} of a classifier telling {len(cur)} titles of the bin from "
        f"{n_base} baseline titles (yellow from {rules.yellow_auc:g}, red from "
        f"{rules.red_auc:g}, each also {rules.yellow_z:g} and {rules.red_z:g} standard errors "
        f"above 0.5: {0.5 + rules.red_z * null_auc_sd(len(cur), n_base):.3f} for red here)",
    )


def _words(
    vectorizer: Any, clf: Any, X: Any, n_base: int, rules: TextRules
) -> tuple[list[WordShare], list[WordShare]]:
    """Words the classifier leans on most, each side, that are more frequent on that side."""
    vocab = vectorizer.get_feature_names_out()
    present = X > 0
    n_cur = X.shape[0] - n_base
    df_base = np.asarray(present[:n_base].sum(axis=0)).ravel()
    df_cur = np.asarray(present[n_base:].sum(axis=0)).ravel()
    share_base, share_cur = df_base / n_base, df_cur / n_cur
    readable = np.array([_readable(w) for w in vocab])
    coef = clf.coef_[0]

    def pick(sign: int, side_df: np.ndarray, more: np.ndarray) -> list[WordShare]:
        ok = readable & (side_df >= rules.min_word_questions) & more
        order = [i for i in np.argsort(-sign * coef, kind="stable") if ok[i]]
        return [
            WordShare(str(vocab[i]), round(float(share_cur[i]), 4), round(float(share_base[i]), 4))
            for i in order[: rules.n_words]
        ]

    return (
        pick(1, df_cur, share_cur > share_base),
        pick(-1, df_base, share_base > share_cur),
    )


def oov_words(
    titles: Iterable[str], vocabulary: Iterable[str], n: int = 20
) -> list[dict[str, Any]]:
    """The most frequent words the model never learnt (a question counted once per word)."""
    known = set(vocabulary)
    counts: Counter[str] = Counter()
    for title in titles:
        counts.update({t for t in tokenize(title or "") if t not in known and _readable(t)})
    return [{"word": w, "count": c} for w, c in counts.most_common(n)]


def _readable(token: str) -> bool:
    """A word worth naming to a person: not a stop word, a number or a single character."""
    return len(token) > 1 and not token.isdigit() and token not in _stop_words()


@functools.cache
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def unknown_tags(
    feedback_tags: Iterable[Sequence[str]], vocabulary: Iterable[str], n: int = 20
) -> list[dict[str, Any]]:
    """User tags outside the served model's vocabulary, most frequent first, with their share
    of all the user tags given."""
    known = set(vocabulary)
    counts: Counter[str] = Counter()
    total = 0
    for tags in feedback_tags:
        total += len(tags)
        counts.update(t for t in tags if t not in known)
    return [
        {"tag": t, "count": c, "share": round(c / total, 4) if total else math.nan}
        for t, c in counts.most_common(n)
    ]
