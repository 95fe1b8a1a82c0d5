"""The tag model: scikit-learn pipelines for training, a fast path for serving.

Training uses a plain scikit-learn ``Pipeline`` (clean → TF-IDF → one-vs-rest logistic
regression). Serving one question through it costs ~17 ms (one ``predict_proba`` per tag),
so :class:`FastScorer` redoes the same maths with the fitted arrays: token ids, sublinear
TF × IDF, L2 norm, one small dense product, sigmoid — tens of microseconds, equal to the
pipeline's scores within float rounding (tested).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline

from tagger.columns import NO_TAG
from tagger.text import CleanText, QuestionCleaner, clean_question


def build_pipeline(C: float = 4.0, min_df: int = 2, ngram_max: int = 2) -> Pipeline:
    """Preprocessing + training pipeline; ``fit`` takes (title, body) pairs and a label matrix."""
    return Pipeline(
        [
            ("clean", QuestionCleaner()),
            (
                "tfidf",
                TfidfVectorizer(
                    tokenizer=str.split,
                    token_pattern=None,
                    lowercase=False,
                    ngram_range=(1, ngram_max),
                    min_df=min_df,
                    sublinear_tf=True,
                    dtype=np.float64,
                ),
            ),
            (
                "clf",
                # n_jobs must stay 1: joblib workers fail on sparse TF-IDF (read-only buffers)
                OneVsRestClassifier(
                    LogisticRegression(C=C, solver="liblinear", random_state=0), n_jobs=1
                ),
            ),
        ]
    )


@dataclass(frozen=True)
class DecisionRule:
    """Tags whose score reaches ``threshold``, best first, between ``min_tags`` and ``max_tags``.

    A question with no known token gets no tag at all: the model has nothing to go on, and an
    empty prediction is an honest, countable signal (a new language, a pasted error, spam).
    """

    threshold: float
    min_tags: int = 1
    max_tags: int = 5

    def select(self, scores: np.ndarray, n_known: int) -> np.ndarray:
        if n_known == 0:
            return np.empty(0, dtype=np.intp)
        order = np.argsort(-scores, kind="stable")[: self.max_tags]
        n = int(np.count_nonzero(scores[order] >= self.threshold))
        return order[: max(n, self.min_tags)]

    def select_many(self, scores: np.ndarray, n_known: np.ndarray) -> list[np.ndarray]:
        return [self.select(s, int(k)) for s, k in zip(scores, n_known, strict=True)]


@dataclass(frozen=True)
class Analysis:
    """One served question: its tags, their scores and the monitoring features."""

    tags: list[str]
    scores: dict[str, float]
    features: dict[str, Any] = field(default_factory=dict)


class FastScorer:
    """The fitted TF-IDF + one-vs-rest logistic regression as a few numpy operations."""

    def __init__(self, pipeline: Pipeline) -> None:
        tfidf: TfidfVectorizer = pipeline.named_steps["tfidf"]
        ovr: OneVsRestClassifier = pipeline.named_steps["clf"]
        self.vocabulary: dict[str, int] = dict(tfidf.vocabulary_)
        self.ngram_max = int(tfidf.ngram_range[1])
        self.sublinear = bool(tfidf.sublinear_tf)
        self.idf = np.asarray(tfidf.idf_, dtype=np.float64)
        coefs = []
        intercepts = []
        for est in ovr.estimators_:
            if not hasattr(est, "coef_"):
                raise ValueError("every tag needs positive and negative training examples")
            coefs.append(np.asarray(est.coef_, dtype=np.float64).ravel())
            intercepts.append(float(np.ravel(est.intercept_)[0]))
        # rows = features, so a question's few features select a few contiguous rows
        self.weights = np.ascontiguousarray(np.vstack(coefs).T)
        self.intercept = np.asarray(intercepts, dtype=np.float64)
        self._prior = 1.0 / (1.0 + np.exp(-self.intercept))

    def score(self, tokens: Sequence[str]) -> tuple[np.ndarray, int]:
        """Scores for every tag, and how many of the unigram tokens the model knows.

        Plain dict counting and in-place numpy: at ~15 µs a question, each avoided
        temporary array or Counter is a visible share of the serving time.
        """
        get = self.vocabulary.get
        counts: dict[int, int] = {}
        n_known = 0
        for tok in tokens:
            i = get(tok)
            if i is not None:
                n_known += 1
                counts[i] = counts.get(i, 0) + 1
        for n in range(2, self.ngram_max + 1):
            for k in range(len(tokens) - n + 1):
                i = get(" ".join(tokens[k : k + n]))
                if i is not None:
                    counts[i] = counts.get(i, 0) + 1
        if not counts:
            return self._prior.copy(), n_known
        idx = np.fromiter(counts, dtype=np.intp, count=len(counts))
        tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        if self.sublinear:
            np.log(tf, out=tf)
            tf += 1.0
        w = tf * self.idf[idx]
        w /= math.sqrt(float(w @ w))
        z = w @ self.weights[idx]
        z += self.intercept
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        return np.reciprocal(z, out=z), n_known


class TagModel:
    """A fitted model ready to serve: pipeline, tag names, decision rule and fast path."""

    def __init__(self, pipeline: Pipeline, classes: Sequence[str], rule: DecisionRule) -> None:
        self.pipeline = pipeline
        self.classes = np.asarray(list(classes), dtype=object)
        self.rule = rule
        self.fast = FastScorer(pipeline)

    def __getstate__(self) -> dict[str, Any]:
        # the fast path is derived state: rebuilt on load, never pickled
        return {"pipeline": self.pipeline, "classes": list(self.classes), "rule": asdict(self.rule)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["pipeline"], state["classes"], DecisionRule(**state["rule"]))  # type: ignore[misc]

    @property
    def vocabulary_size(self) -> int:
        return len(self.fast.vocabulary)

    def analyse(self, title: str, body: str = "") -> Analysis:
        """Tags, scores and monitoring features of one question (the serving path)."""
        clean = clean_question(title, body)
        scores, n_known = self.fast.score(clean.tokens)
        chosen = self.rule.select(scores, n_known)
        tags = [str(t) for t in self.classes[chosen]]
        tag_scores = {str(self.classes[i]): round(float(scores[i]), 6) for i in chosen}
        return Analysis(
            tags=tags,
            scores=tag_scores,
            features=question_features(title, body, clean, n_known, scores, tags),
        )

    def predict_proba_pipeline(self, questions: Sequence[tuple[str, str]]) -> np.ndarray:
        """The reference scores of the scikit-learn pipeline (slow; for tests and evaluation)."""
        return np.asarray(self.pipeline.predict_proba(list(questions)))


def question_features(
    title: str,
    body: str,
    clean: CleanText,
    n_known: int,
    scores: np.ndarray,
    tags: Sequence[str],
) -> dict[str, Any]:
    """The per-question features stored with each prediction and compared by the drift job.

    The baseline table of a model is built with this same function (through
    :meth:`TagModel.analyse`), so serving and baseline can never disagree on a definition.
    """
    n_tokens = len(clean.tokens)
    return {
        "title_chars": len(title),
        "body_chars": len(body),
        "n_code_blocks": clean.n_code_blocks,
        "n_links": clean.n_links,
        "n_tokens": n_tokens,
        "oov_ratio": round(1.0 - n_known / n_tokens, 6) if n_tokens else 1.0,
        "n_predicted_tags": len(tags),
        "max_score": round(float(scores.max()), 6) if len(scores) else 0.0,
        "top_tag": tags[0] if tags else NO_TAG,
    }
