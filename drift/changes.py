"""What changed in the latest judged bin, named: the text judgement (drift/text.py), the user
tags the served model does not know and the words it never learnt.

The drift job reads a sample of the bin's questions from the store (``PredictionStore.texts``),
compares their titles with the baseline titles the model artefact carries, and writes the
result first in the report ("What changed") and as ``latest.json`` (docs/drift.md).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from drift.settings import DriftSettings
from drift.tags import TagReport
from drift.text import NOT_ENOUGH, TextDrift, TextRules, oov_words, text_drift, unknown_tags
from store import PredictionStore

TEXT_FEATURE = "text"
STATUS_WORDS = ("green", "yellow", "red")


@dataclass
class Changes:
    """The latest judged bin, named; ``as_dict`` is the part of latest.json it fills."""

    bin_start: pd.Timestamp
    bin_end: pd.Timestamp
    text: TextDrift
    unknown_tags: list[dict[str, Any]] = field(default_factory=list)
    oov_words: list[dict[str, Any]] = field(default_factory=list)
    questions: int = 0
    with_feedback: int = 0

    def as_dict(self) -> dict[str, Any]:
        text = self.text.as_dict()
        return {
            "bin_start": self.bin_start.isoformat(),
            "bin_end": self.bin_end.isoformat(),
            "questions_sampled": self.questions,
            "questions_with_feedback": self.with_feedback,
            "text": text,
            "unknown_tags": self.unknown_tags,
            "oov_words": self.oov_words,
        }


def text_rules(settings: DriftSettings) -> TextRules:
    return TextRules(
        yellow_auc=settings.text_yellow_auc,
        red_auc=settings.text_red_auc,
        min_titles=settings.text_min_titles,
        max_titles=settings.text_max_titles,
        n_words=settings.text_top_words,
        n_questions=settings.text_top_questions,
    )


@functools.lru_cache(maxsize=4)
def _vocabulary(model_dir: str, mtime_ns: int) -> frozenset[str]:
    """The words the served model knows (its TF-IDF unigrams); cached per artefact file."""
    from tagger.artefact import load_artefact

    path = Path(model_dir)
    model = load_artefact(path.parent, path.name).model
    return frozenset(w for w in model.fast.vocabulary if " " not in w)


def model_vocabulary(model_dir: Path) -> frozenset[str]:
    from tagger.artefact import MODEL_FILE

    return _vocabulary(str(model_dir), (Path(model_dir) / MODEL_FILE).stat().st_mtime_ns)


def read_changes(
    settings: DriftSettings,
    store: PredictionStore,
    model_dir: Path,
    card: dict[str, Any],
    baseline: pd.DataFrame,
    bin_start: pd.Timestamp,
    now: pd.Timestamp,
) -> Changes:
    """Judge the text of the bin that starts at ``bin_start`` and name its new tags and words.

    Only the rows the served version answered count (as for the histograms). A bin whose text
    is past ``TAGWATCH_RETENTION_DAYS`` is judged on counts only, and says so."""
    bin_end = bin_start + pd.Timedelta(settings.bin_size)
    if settings.retention_days and bin_end < now - pd.Timedelta(days=settings.retention_days):
        reason = (
            f"not enough text: the bin is older than TAGWATCH_RETENTION_DAYS "
            f"({settings.retention_days:g} days), its titles are blanked; judged on counts only"
        )
        return Changes(bin_start, bin_end, TextDrift(NOT_ENOUGH, None, 0, 0, reason=reason))
    sample = store.texts(bin_start.timestamp(), bin_end.timestamp(), settings.text_max_titles)
    sample = sample.loc[sample["model_version"] == str(card.get("version"))]
    given = [t for t in sample["feedback_tags"] if isinstance(t, list)]
    if "title" in baseline.columns:
        base_titles = baseline["title"].fillna("").astype(str).tolist()
        text = text_drift(
            base_titles, sample["title"].tolist(), sample["url"].tolist(), text_rules(settings)
        )
    else:
        text = TextDrift(
            NOT_ENOUGH,
            None,
            len(sample),
            0,
            reason="not enough text: this model's artefact carries no baseline titles "
            "(trained before text drift existed); register a newly trained model",
        )
    n = settings.text_top_words
    return Changes(
        bin_start,
        bin_end,
        text,
        unknown_tags=unknown_tags(given, card.get("tags") or [], n),
        oov_words=oov_words(sample["title"].tolist(), model_vocabulary(model_dir), n),
        questions=len(sample),
        with_feedback=len(given),
    )


def text_status(changes: Changes) -> tuple[int, int, int] | None:
    """The text feature's (status, red, yellow) for the judgement; None when not judged."""
    code = changes.text.status_code
    if code is None:
        return None
    return code, int(code == 2), int(code == 1)


def latest_json(
    changes: Changes | None,
    statuses: dict[str, tuple[int, int, int]],
    values: dict[str, float],
    model_version: str,
    generated_at: pd.Timestamp,
    report: str,
    tags: TagReport | None = None,
) -> dict[str, Any]:
    """``latest.json``: the same as the report's "What changed" and "Tags" sections, for
    machines; ``tags`` lists each tag's F1 against its baseline, worst first (drift/tags.py)."""
    features = {
        f: {"value": _finite(values.get(f)), "status": STATUS_WORDS[s[0]]}
        for f, s in sorted(statuses.items())
    }
    out: dict[str, Any] = {
        "generated_at": generated_at.isoformat(),
        "model_version": model_version,
        "report": report,
        "features": features,
    }
    if changes is None:
        out |= {"bin_start": None, "bin_end": None, "text": None, "unknown_tags": [],
                "oov_words": []}  # fmt: skip
    else:
        out |= changes.as_dict()
    out["tags"] = [] if tags is None else tags.rows
    if tags is not None:
        out["tags_period"] = {
            "since": tags.since.isoformat(),
            "until": tags.until.isoformat(),
            "questions_with_feedback": tags.questions,
            "min_support": tags.rules.min_support,
            "note": tags.note,
        }
    return out


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def section_html(changes: Changes) -> str:
    """The report's first section: what changed in the latest bin, in words and questions."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=select_autoescape(["html", "html.j2"]),
    )
    return env.get_template("changes.html.j2").render(c=changes, t=changes.text)


def period_changes(
    current: pd.DataFrame,
    previous: pd.DataFrame,
    card: dict[str, Any],
    baseline: pd.DataFrame,
    vocabulary: frozenset[str],
    rules: TextRules,
) -> dict[str, Any]:
    """What changed over a period (the weekly summary's week) against the period before it:
    the user tags the model does not know, each marked ``new`` when the period before did not
    have it; the words the model never learnt; the text judgement with its typical questions.

    ``current`` and ``previous`` are ``PredictionStore.texts`` samples."""
    vocab_tags = card.get("tags") or []
    given = [t for t in current["feedback_tags"] if isinstance(t, list)]
    before = [t for t in previous["feedback_tags"] if isinstance(t, list)]
    known = set(vocab_tags)
    seen_before = {t for tags in before for t in tags if t not in known}
    tags = unknown_tags(given, vocab_tags, rules.n_words)
    for u in tags:
        u["new"] = u["tag"] not in seen_before
    titles = current["title"].tolist()
    if "title" in baseline.columns:
        base = baseline["title"].fillna("").astype(str).tolist()
        text = text_drift(base, titles, current["url"].tolist(), rules)
    else:
        text = TextDrift(NOT_ENOUGH, None, len(titles), 0, reason="no baseline titles")
    return {
        "questions": len(current),
        "with_feedback": len(given),
        "previous_with_feedback": len(before),
        "unknown_tags": tags,
        "oov_words": oov_words(titles, vocabulary, rules.n_words),
        "text": text.as_dict(),
    }
