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

from tagger import tagquality
from tagger.artefact import load_artefact, write_artefact
from tagger.columns import FEATURE_COLUMNS
from tagger.data import DataError, load_questions, questions_of, sha256_of
from tagger.labels import label_profile
from tagger.metrics import coverage, jaccard, normalize_tags
from tagger.model import DecisionRule, TagModel, build_pipeline
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
    set_latest: bool = True
    canary_rows: int = 500


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


def question_jaccards(model: TagModel, df: pd.DataFrame) -> np.ndarray:
    """Each question's Jaccard (served predictions vs its tags), in ``df``'s order: the paired
    samples of the gate's bootstrap."""
    return np.fromiter(
        (
            jaccard(model.analyse(title, body).tags, tags)
            for title, body, tags in zip(df["title"], df["body"], df["tags"], strict=True)
        ),
        dtype=np.float64,
        count=len(df),
    )


def pin_canary(holdout: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``rows`` questions spread evenly over a held-out period: the canary set an artefact keeps.

    Real questions with their true tags that no client wrote; every later retrain must not
    collapse on them (``lifecycle.gate``).
    """
    if holdout.empty or rows < 1:
        return holdout.loc[:, ["created_at", "title", "body", "tags"]].iloc[0:0]
    idx = np.unique(np.linspace(0, len(holdout) - 1, min(rows, len(holdout))).round().astype(int))
    return holdout.iloc[idx].loc[:, ["created_at", "title", "body", "tags"]].reset_index(drop=True)


def periods(split: Split) -> Iterator[tuple[str, pd.DataFrame]]:
    """Validation, then each calendar year after the cut-off that has data."""
    yield f"validation {split.validation['created_at'].dt.year.iloc[-1]}", split.validation
    for year, part in split.later.groupby(split.later["created_at"].dt.year):
        yield str(year), part


def baseline_table(model: TagModel, df: pd.DataFrame) -> pd.DataFrame:
    """Monitoring features of ``df`` computed exactly as the predictor computes them, with the
    titles and links: the drift job's text judgement compares a bin's titles with these."""
    rows = [model.analyse(t, b).features for t, b in questions_of(df)]
    table = pd.DataFrame(rows, columns=list(FEATURE_COLUMNS))
    table.insert(0, "created_at", df["created_at"].to_numpy())
    table["title"] = df["title"].fillna("").astype(str).to_numpy()
    url = df["url"] if "url" in df.columns else pd.Series("", index=df.index)
    table["url"] = url.fillna("").astype(str).to_numpy()
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


@dataclass(frozen=True)
class TrainResult:
    """A fitted, tuned and evaluated model with everything its artefact holds."""

    model: TagModel
    card: dict[str, Any]
    baseline: pd.DataFrame
    table: list[dict[str, Any]]
    canary: pd.DataFrame | None = None
    per_tag: pd.DataFrame | None = None  # the per-tag baseline (tagger.tagquality)

    @property
    def version(self) -> str:
        return str(self.card["version"])


@contextmanager
def _step(bar: tqdm, name: str) -> Iterator[None]:
    bar.set_description(name)
    t0 = time.perf_counter()
    yield
    log.info("%s: %.1f s", name, time.perf_counter() - t0)
    bar.update(1)


def _period(df: pd.DataFrame) -> dict[str, str]:
    return {"start": df["created_at"].min().isoformat(), "end": df["created_at"].max().isoformat()}


def fit_artefact(
    train_df: pd.DataFrame,
    validation_df: pd.DataFrame,
    config: TrainConfig,
    later: pd.DataFrame | None = None,
    baseline_df: pd.DataFrame | None = None,
    extra_card: dict[str, Any] | None = None,
    classes: Sequence[str] | None = None,
    canary: pd.DataFrame | None = None,
    canary_reference: float | None = None,
    per_tag_df: pd.DataFrame | None = None,
) -> TrainResult:
    """Fit on ``train_df``, tune on ``validation_df``, evaluate, build the drift baseline.

    The K most frequent tags of ``train_df`` are the vocabulary (a retrain on recent feedback
    picks up the tags the old model lacks). ``later`` is evaluated by calendar year (decay
    table); ``baseline_df`` (default: validation's even rows) gives the drift baseline: features
    of questions the model never fitted on. ``canary``, ``canary_reference``: see
    :func:`trusted_parts`. ``per_tag_df`` (default: validation) gives the per-tag baseline
    that live feedback is compared with, tag by tag.
    """
    steps = ["fit", "tune", "evaluate", "baseline", "trust"]
    bar = tqdm(total=len(steps), disable=not config.progress, unit="step", file=sys.stderr)
    t_start = time.perf_counter()
    # ``classes``: a vocabulary chosen elsewhere (a retrain's window, when old data is added)
    classes = list(classes) if classes else top_k_tags(train_df["tags"].tolist(), config.k)
    with _step(bar, f"fit ({len(train_df)} questions, {len(classes)} tags)"):
        model = fit_model(train_df, classes, config)
    with _step(bar, "tune"):
        rule, _ = tune_rule(model, validation_df)
        model = TagModel(model.pipeline, classes, rule)
    with _step(bar, "evaluate"):
        split = Split(train=train_df, validation=validation_df, later=_empty_like(train_df, later))
        vocab = set(classes)
        table = [{"period": name, **evaluate(model, part, vocab)} for name, part in periods(split)]
        per_tag = tagquality.baseline_table(
            model, validation_df if per_tag_df is None else per_tag_df
        )
    with _step(bar, "baseline"):
        base = split.baseline if baseline_df is None else baseline_df
        baseline = baseline_table(model, base)
    with _step(bar, "trust"):
        pinned, trusted = trusted_parts(model, split, config.canary_rows, canary, canary_reference)
    bar.close()
    version = config.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    card = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_period": {**_period(train_df), "cutoff": config.cutoff.isoformat()},
        "validation_period": _period(validation_df),
        "rows": {
            "train": len(train_df),
            "validation": len(validation_df),
            "baseline": len(base),
            "holdout": len(split.holdout),
        },
        "k": len(classes),
        "tags": classes,
        "decision_rule": asdict(rule),
        "validation": table[0],
        "periods": table,
        "params": {"C": config.C, "min_df": config.min_df, "ngram_max": config.ngram_max},
        "vocabulary_size": model.vocabulary_size,
        "training_seconds": round(time.perf_counter() - t_start, 1),
        **trusted,
        **(extra_card or {}),
    }
    return TrainResult(
        model=model, card=card, baseline=baseline, table=table, canary=pinned, per_tag=per_tag
    )


def trusted_parts(
    model: TagModel,
    split: Split,
    canary_rows: int,
    canary: pd.DataFrame | None = None,
    canary_reference: float | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """What a later retrain trusts about this model: (canary set, card entries).

    The canary set (default: ``canary_rows`` of validation's odd rows, never fitted on) is kept
    in the artefact; a retrain passes its parent's set with the parent's ``canary_reference``
    (the Jaccard of the model that pinned it), so a chain of retrains cannot lower the bar. The
    label profile of the training data is what new feedback is compared with.
    """
    pinned = pin_canary(split.holdout, canary_rows) if canary is None else canary
    labels = label_profile(split.train, model, split.validation)
    if pinned.empty:
        return pinned, {"labels": labels.as_dict(), "canary": {"rows": 0}}
    score = float(np.mean(question_jaccards(model, pinned)))
    return pinned, {
        "labels": labels.as_dict(),
        "canary": {
            "rows": len(pinned),
            "period": _period(pinned),
            "inherited": canary is not None,
            "jaccard": round(score, 4),
            "reference_jaccard": round(score if canary_reference is None else canary_reference, 4),
        },
    }


def _empty_like(df: pd.DataFrame, later: pd.DataFrame | None) -> pd.DataFrame:
    return df.iloc[0:0] if later is None else later


def write_result(result: TrainResult, models_dir: Path, set_latest: bool = True) -> Path:
    return write_artefact(
        models_dir,
        result.version,
        result.model,
        result.card,
        result.baseline,
        set_latest,
        canary=result.canary,
        per_tag=result.per_tag,
    )


def train(config: TrainConfig) -> Path:
    """Build a model artefact from the question CSV; returns its folder."""
    df = load_questions(config.data_path)
    split = split_by_time(df, config.cutoff, config.validation_share, config.max_train_rows)
    extra = {
        "data": {"file": config.data_path.name, "sha256": sha256_of(config.data_path)},
        "rows_dropped_invalid": int(df.attrs.get("dropped", 0)),
    }
    result = fit_artefact(
        split.train, split.validation, config, later=split.later, extra_card=extra
    )
    out = write_result(result, config.output_dir, config.set_latest)
    print(format_table(result.table))
    rule = result.model.rule
    val_j = result.table[0]["jaccard"]
    print(f"validation mean Jaccard {val_j:.4f} with threshold {rule.threshold:.2f}")
    print(f"model written to {out}")
    return out


def train_variants(
    data_path: Path,
    output_dir: Path,
    ks: Sequence[int],
    max_train_rows: int | None = None,
    validation_tail: int | None = None,
    prefix: str = "k",
) -> dict[str, Path]:
    """One artefact per K (versions ``<prefix><K>``) from one data load, none set as latest:
    the pairs of real models that benchmarks and tests swap between."""
    df = load_questions(data_path)
    paths = {}
    for k in ks:
        config = TrainConfig(data_path=data_path, output_dir=output_dir, k=k,
                             max_train_rows=max_train_rows, version=f"{prefix}{k}",
                             progress=False, set_latest=False)  # fmt: skip
        split = split_by_time(df, config.cutoff, config.validation_share, max_train_rows)
        validation = (
            split.validation if validation_tail is None else split.validation.tail(validation_tail)
        )
        result = fit_artefact(split.train, validation, config)
        paths[result.version] = write_result(result, output_dir, set_latest=False)
    return paths


def add_promote_option(parser: argparse.ArgumentParser) -> None:
    """``--promote``: the same choice for a training and for registering a model on disk."""
    parser.add_argument(
        "--promote",
        choices=("auto", "always", "never"),
        default="auto",
        help="make the new version champion: auto = only when there is no champion yet",
    )


def parse_args(
    argv: Sequence[str] | None, settings: TagwatchSettings
) -> tuple[TrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m tagger.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=settings.titles_path, help="question CSV (.gz ok)")
    p.add_argument("--cutoff", default="2012-01-01", help="train on questions before this date")
    p.add_argument("--k", type=int, default=100, help="number of tags (most frequent)")
    p.add_argument("--output", type=Path, default=settings.models_dir, help="models folder")
    p.add_argument("--max-train-rows", type=int, default=None, help="keep only the latest N")
    p.add_argument("--version", default=None, help="artefact version (default: a timestamp)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument(
        "--no-track",
        dest="track",
        action="store_false",
        help="no MLflow run, no registration (the artefact becomes models/LATEST at once)",
    )
    add_promote_option(p)
    a = p.parse_args(argv)
    try:
        cutoff = pd.Timestamp(a.cutoff, tz="UTC")
    except ValueError:
        p.error(f"--cutoff: not a date: {a.cutoff!r}")
    if a.k < 1:
        p.error("--k: must be at least 1")
    config = TrainConfig(
        data_path=a.data,
        output_dir=a.output,
        cutoff=cutoff,
        k=a.k,
        max_train_rows=a.max_train_rows,
        version=a.version,
        progress=not a.quiet,
        set_latest=not a.track,
    )
    return config, a


def track(settings: TagwatchSettings, config: TrainConfig, out: Path, promote: str) -> int:
    """Log the training to MLflow, register it, promote it when asked; the version number."""
    from lifecycle.registry import Registry, sync_champion
    from tagger.tracking import log_training

    data = load_questions(config.data_path)
    later = data.loc[data["created_at"] >= config.cutoff]
    model = load_artefact(out.parent, out.name).model
    registered = log_training(
        settings,
        out,
        run_name=f"train {out.name}",
        params={"data_file": config.data_path.name, "max_train_rows": config.max_train_rows},
        tags={"kind": "train"},
        evaluation_df=later.tail(2000) if len(later) else data.tail(2000),
        per_tag=tagquality.baseline_table(
            model, later.tail(5000) if len(later) else data.tail(5000)
        ),
    )
    print(f"MLflow: registered {settings.registered_model} version {registered.version}")
    registry = Registry(settings)
    if promote == "always" or (promote == "auto" and registry.champion() is None):
        registry.promote(registered.version, reason=f"python -m tagger.train --promote {promote}")
        sync_champion(settings, config.output_dir)
        print(f"MLflow: version {registered.version} is now {settings.champion_alias}")
    return registered.version


def main(argv: Sequence[str] | None = None, settings: TagwatchSettings | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = settings or TagwatchSettings()
    config, args = parse_args(argv, settings)
    try:
        out = train(config)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.track:
        from lifecycle.registry import RegistryError

        try:
            track(settings, config, out, args.promote)
        except RegistryError as exc:
            print(f"error: MLflow: {exc} (the artefact is in {out})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
