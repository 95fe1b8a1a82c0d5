"""Training: ``python -m tagger.train`` builds ``models/<version>/`` from a question CSV.

Steps (each a pure function, the CLI only wires them): split by time (train on questions
before the cut-off, the last 15% of that period held out for validation), keep the K most
frequent tags, fit the pipeline, tune the decision rule on validation for mean Jaccard,
evaluate per period to document decay under real drift, and compute the drift baseline on
questions the model did not fit on.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.preprocessing import MultiLabelBinarizer
from tqdm import tqdm

from tagger.artefact import write_artefact
from tagger.data import DataError, load_questions, questions_of, sha256_of
from tagger.metrics import coverage, jaccard, normalize_tags
from tagger.model import FEATURE_COLUMNS, DecisionRule, TagModel, build_pipeline
from tagger.settings import TagwatchSettings
from tagger.text import clean_question

log = logging.getLogger("tagger.train")

DEFAULT_CUTOFF = pd.Timestamp("2012-01-01", tz="UTC")
THRESHOLDS = np.round(np.arange(0.05, 0.61, 0.01), 2)


@dataclass(frozen=True)
class TrainConfig:
    data_path: Path
    output_dir: Path
    cutoff: pd.Timestamp = DEFAULT_CUTOFF
    k: int = 100
    validation_share: float = 0.15
    C: float = 4.0
    min_df: int = 2
    ngram_max: int = 2
    max_train_rows: int | None = None
    version: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    later: pd.DataFrame

    @property
    def baseline(self) -> pd.DataFrame:
        """Even rows of validation: the drift baseline (never fitted on)."""
        return self.validation.iloc[0::2]

    @property
    def holdout(self) -> pd.DataFrame:
        """Odd rows of validation: same period as the baseline, for replays that must stay green."""
        return self.validation.iloc[1::2]


def split_by_time(
    df: pd.DataFrame, cutoff: pd.Timestamp, validation_share: float, max_train_rows: int | None
) -> Split:
    """Before the cut-off: train then validation (the last share, by time); after: evaluation."""
    before = df.loc[df["created_at"] < cutoff]
    later = df.loc[df["created_at"] >= cutoff]
    if len(before) < 50:
        raise DataError(f"only {len(before)} questions before the cut-off {cutoff.date()}")
    n_val = max(1, round(len(before) * validation_share))
    train, validation = before.iloc[:-n_val], before.iloc[-n_val:]
    if max_train_rows is not None and len(train) > max_train_rows:
        train = train.iloc[-max_train_rows:]
    return Split(train=train, validation=validation, later=later)


def top_k_tags(tag_lists: Sequence[Sequence[str]], k: int) -> list[str]:
    """The K most frequent tags (ties broken by name, so a re-run gives the same vocabulary)."""
    counts = Counter(t for tags in tag_lists for t in tags)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def fit_model(train: pd.DataFrame, classes: list[str], config: TrainConfig) -> TagModel:
    mlb = MultiLabelBinarizer(classes=classes)
    y = mlb.fit_transform([[t for t in tags if t in set(classes)] for tags in train["tags"]])
    pipeline = build_pipeline(C=config.C, min_df=config.min_df, ngram_max=config.ngram_max)
    pipeline.fit(questions_of(train), y)
    return TagModel(pipeline, classes, DecisionRule(threshold=0.5))


def tune_rule(
    model: TagModel, df: pd.DataFrame, thresholds: np.ndarray = THRESHOLDS
) -> tuple[DecisionRule, float]:
    """The score threshold that maximises mean Jaccard on ``df`` (1 to 5 tags a question)."""
    # the serving path's own scores (equal to the pipeline's): one pass gives both
    scored = [model.fast.score(clean_question(t, b).tokens) for t, b in questions_of(df)]
    scores = np.array([s for s, _ in scored])
    n_known = np.array([k for _, k in scored])
    truth = [normalize_tags(t) for t in df["tags"]]
    best = (DecisionRule(threshold=float(thresholds[0])), -1.0)
    for th in thresholds:
        rule = DecisionRule(threshold=float(th))
        chosen = rule.select_many(scores, n_known)
        mean_j = float(
            np.mean([jaccard(model.classes[c], t) for c, t in zip(chosen, truth, strict=True)])
        )
        if mean_j > best[1]:
            best = (rule, mean_j)
    return best


def evaluate(model: TagModel, df: pd.DataFrame, vocabulary: set[str]) -> dict[str, float]:
    """Mean Jaccard and coverage of the served predictions, and how the truth moved away."""
    j, c, empty, unknown, n_tags = 0.0, 0.0, 0, 0, 0
    for title, body, tags in zip(df["title"], df["body"], df["tags"], strict=True):
        pred = model.analyse(title, body).tags
        j += jaccard(pred, tags)
        c += coverage(pred, tags)
        empty += not pred
        unknown += sum(1 for t in tags if t not in vocabulary)
        n_tags += len(tags)
    n = max(len(df), 1)
    return {
        "rows": len(df),
        "jaccard": round(j / n, 4),
        "coverage": round(c / n, 4),
        "empty_ratio": round(empty / n, 4),
        "unknown_tag_ratio": round(unknown / max(n_tags, 1), 4),
    }


def periods(split: Split) -> Iterator[tuple[str, pd.DataFrame]]:
    """Validation, then each calendar year after the cut-off that has data."""
    yield f"validation {split.validation['created_at'].dt.year.iloc[-1]}", split.validation
    for year, part in split.later.groupby(split.later["created_at"].dt.year):
        yield str(year), part


def baseline_table(model: TagModel, df: pd.DataFrame) -> pd.DataFrame:
    """Monitoring features of ``df`` computed exactly as the predictor computes them."""
    rows = [model.analyse(t, b).features for t, b in questions_of(df)]
    table = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    table.insert(0, "created_at", df["created_at"].to_numpy())
    return table


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'period':<18}{'rows':>7}{'jaccard':>9}{'coverage':>10}{'empty':>8}{'unk.tags':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['period']:<18}{r['rows']:>7}{r['jaccard']:>9.4f}{r['coverage']:>10.4f}"
            f"{r['empty_ratio']:>8.3f}{r['unknown_tag_ratio']:>10.3f}"
        )
    return "\n".join(lines)


@contextmanager
def _step(bar: tqdm, name: str) -> Iterator[None]:
    bar.set_description(name)
    t0 = time.perf_counter()
    yield
    log.info("%s: %.1f s", name, time.perf_counter() - t0)
    bar.update(1)


def train(config: TrainConfig) -> Path:
    """Build a model artefact; returns its folder."""
    steps = ["load", "split", "fit", "tune", "evaluate", "baseline", "write"]
    bar = tqdm(total=len(steps), disable=not config.progress, unit="step", file=sys.stderr)
    t_start = time.perf_counter()
    with _step(bar, "load"):
        df = load_questions(config.data_path)
    with _step(bar, "split"):
        split = split_by_time(df, config.cutoff, config.validation_share, config.max_train_rows)
        classes = top_k_tags(split.train["tags"].tolist(), config.k)
    with _step(bar, f"fit ({len(split.train)} questions, {len(classes)} tags)"):
        model = fit_model(split.train, classes, config)
    with _step(bar, "tune"):
        rule, val_j = tune_rule(model, split.validation)
        model = TagModel(model.pipeline, classes, rule)
    with _step(bar, "evaluate"):
        vocab = set(classes)
        table = [{"period": name, **evaluate(model, part, vocab)} for name, part in periods(split)]
    with _step(bar, "baseline"):
        baseline = baseline_table(model, split.baseline)
    with _step(bar, "write"):
        version = config.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        card = {
            "version": version,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "training_period": {
                "start": split.train["created_at"].min().isoformat(),
                "end": split.train["created_at"].max().isoformat(),
                "cutoff": config.cutoff.isoformat(),
            },
            "validation_period": {
                "start": split.validation["created_at"].min().isoformat(),
                "end": split.validation["created_at"].max().isoformat(),
            },
            "rows": {
                "train": len(split.train),
                "validation": len(split.validation),
                "baseline": len(split.baseline),
                "holdout": len(split.holdout),
                "dropped_invalid": int(df.attrs.get("dropped", 0)),
            },
            "k": len(classes),
            "tags": classes,
            "decision_rule": asdict(rule),
            "validation": table[0],
            "periods": table,
            "params": {"C": config.C, "min_df": config.min_df, "ngram_max": config.ngram_max},
            "vocabulary_size": model.vocabulary_size,
            "data": {"file": config.data_path.name, "sha256": sha256_of(config.data_path)},
            "training_seconds": round(time.perf_counter() - t_start, 1),
        }
        out = write_artefact(config.output_dir, version, model, card, baseline)
    bar.close()
    print(format_table(table))
    print(f"validation mean Jaccard {val_j:.4f} with threshold {rule.threshold:.2f}")
    print(f"model written to {out}")
    return out


def parse_args(argv: Sequence[str] | None, settings: TagwatchSettings) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m tagger.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=settings.titles_path, help="question CSV (.gz ok)")
    p.add_argument("--cutoff", default="2012-01-01", help="train on questions before this date")
    p.add_argument("--k", type=int, default=100, help="number of tags (most frequent)")
    p.add_argument("--output", type=Path, default=settings.models_dir, help="models folder")
    p.add_argument("--max-train-rows", type=int, default=None, help="keep only the latest N")
    p.add_argument("--version", default=None, help="artefact version (default: a timestamp)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    a = p.parse_args(argv)
    try:
        cutoff = pd.Timestamp(a.cutoff, tz="UTC")
    except ValueError:
        p.error(f"--cutoff: not a date: {a.cutoff!r}")
    if a.k < 1:
        p.error("--k: must be at least 1")
    return TrainConfig(
        data_path=a.data,
        output_dir=a.output,
        cutoff=cutoff,
        k=a.k,
        max_train_rows=a.max_train_rows,
        version=a.version,
        progress=not a.quiet,
    )


def main(argv: Sequence[str] | None = None, settings: TagwatchSettings | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = settings or TagwatchSettings()
    config = parse_args(argv, settings)
    try:
        train(config)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
