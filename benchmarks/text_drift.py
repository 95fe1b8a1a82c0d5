"""Calibrate and time the drift job's text judgement (drift/text.py) on the project's data.

The baseline is a random half of the default model's 2011 validation questions; the control
bins are drawn from the other half (the baseline period, never trained on), the drifted bins
from later years. For each period and bin size it prints the ROC AUC over several samples
(mean, min, p95, max), how many samples would be yellow/red under the default rules, and the
time of one judgement. ``python -m benchmarks.text_drift [--samples 20]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from drift.text import TextRules, text_drift
from tagger.data import load_questions
from tagger.settings import TagwatchSettings
from tagger.train import DEFAULT_CUTOFF

SIZES = (100, 300, 1000, 1900)


def periods(settings: TagwatchSettings, seed: int = 0) -> tuple[list[str], dict[str, pd.DataFrame]]:
    """(baseline titles, {period: questions}) with the validation slice split in halves."""
    df = load_questions(settings.titles_path)
    before = df.loc[df["created_at"] < DEFAULT_CUTOFF]
    validation = before.iloc[int(len(before) * 0.85) :]
    order = np.random.default_rng(seed).permutation(len(validation))
    half = len(validation) // 2
    baseline = validation.iloc[order[:half]]
    years = df["created_at"].dt.year
    out = {"2011 control": validation.iloc[order[half:]]}
    for year in (2013, 2016, 2019, 2020):
        out[str(year)] = df.loc[years == year]
    return baseline["title"].tolist(), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    rules = TextRules()
    baseline, by_period = periods(TagwatchSettings())
    print(
        f"baseline: {len(baseline)} titles; rules yellow >= {rules.yellow_auc}, "
        f"red >= {rules.red_auc}, and {rules.yellow_z} / {rules.red_z} standard errors"
    )
    print(
        f"{'period':<13} {'titles':>6} {'mean':>6} {'min':>6} {'p95':>6} {'max':>6} "
        f"{'yellow':>6} {'red':>4} {'s/run':>6}"
    )
    for name, questions in by_period.items():
        for size in SIZES:
            aucs, seconds, st = [], [], []
            for s in range(args.samples):
                sample = questions.sample(min(size, len(questions)), random_state=s)
                t0 = time.perf_counter()
                result = text_drift(baseline, sample["title"].tolist(), rules=rules)
                seconds.append(time.perf_counter() - t0)
                aucs.append(result.auc or float("nan"))
                st.append(result.status)
            print(
                f"{name:<13} {size:>6} {np.mean(aucs):6.3f} {np.min(aucs):6.3f} "
                f"{np.percentile(aucs, 95):6.3f} {np.max(aucs):6.3f} "
                f"{st.count('yellow'):>6} {st.count('red'):>4} {np.mean(seconds):6.3f}"
            )


if __name__ == "__main__":
    main()
