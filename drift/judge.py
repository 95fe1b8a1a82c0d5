"""Judging: popmon with an external reference and effect-size rules, plus the feedback rule.

popmon's default rules (pulls and chi² z-scores, i.e. significance) turn red from sampling
noise alone once a bin holds ~1,000 rows and a feature has many categories. The rules here
are effect sizes instead: the largest change of one histogram bin's share of questions
(popmon's ``max_prob_diff``), which does not grow with the number of rows. See docs/drift.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from drift.histograms import POPMON_FEATURES, TIME_AXIS, BinCounts, to_histogrammar
from drift.settings import DriftSettings

log = logging.getLogger(__name__)

JUDGED_STATISTIC = "ref_max_prob_diff"
FEEDBACK_FEATURE = "unknown_feedback_tags_ratio"


@dataclass
class Judgement:
    """Traffic lights of the latest judged bin: ``{feature: (worst, n_red, n_yellow)}``."""

    latest_bin: pd.Timestamp
    statuses: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    html: str = ""


def popmon_settings(settings: DriftSettings) -> Any:
    import popmon

    ps = popmon.Settings(
        time_axis=TIME_AXIS,
        features=[f"{TIME_AXIS}:{f}" for f in POPMON_FEATURES],
        reference_type="external",
    )
    red, yellow = settings.red_max_prob_diff, settings.yellow_max_prob_diff
    # lower bounds 0: an effect size is never negative (never below 0: never a lower light),
    # and the comparison charts' y axis then starts at 0 instead of at -1
    ps.monitoring.monitoring_rules = {JUDGED_STATISTIC: [red, yellow, 0.0, 0.0]}
    ps.report.title = "tagwatch drift: served questions against the held-out validation questions"
    ps.report.online_report = settings.report_online
    ps.report.extended_report = False
    # popmon 1.4 computes jsd and psi on raw counts (not probabilities): not shown, not used
    # n_green/n_yellow/n_red: the Alerts section's counts (it is blank without them)
    ps.report.show_stats = ["mean", "ref_max_prob_diff", "n_green", "n_yellow", "n_red"]
    ps.report.section.histograms.plot_hist_n = 3
    ps.report.section.histograms.hist_names = ["heatmap_column_normalized"]
    return ps


def run_popmon(hists: dict[str, Any], reference: dict[str, Any], ps: Any) -> dict[str, Any]:
    """popmon's external-reference pipeline, limited to what the job judges and shows.

    Built from popmon's own modules: split, profile, compare with the reference, traffic
    lights, report. Left out: comparisons with the previous bin, pulls against the reference's
    spread and trend z-scores (significance measures; with a single reference bin its spread is
    undefined), which also cost most of popmon's time on a daily run.
    """
    from popmon.analysis.comparison.hist_comparer import ReferenceHistComparer
    from popmon.analysis.profiling import HistProfiler
    from popmon.base import Pipeline
    from popmon.hist.hist_splitter import HistSplitter
    from popmon.pipeline.metrics_pipelines import get_timing_module, get_traffic_light_modules
    from popmon.pipeline.report_pipelines import ReportPipe

    prefix = f"{ps.time_axis}:"
    modules = [
        *get_timing_module("start_time"),
        HistSplitter(
            read_key="hists",
            store_key="split_hists",
            features=ps.features,
            feature_begins_with=prefix,
        ),
        HistProfiler(read_key="split_hists", store_key="profiles"),
        HistSplitter(
            read_key="ref_hists",
            store_key="split_ref_hists",
            features=ps.features,
            feature_begins_with=prefix,
        ),
        ReferenceHistComparer(
            reference_key="split_ref_hists", assign_to_key="split_hists", store_key="comparisons"
        ),
        *get_traffic_light_modules(ps.monitoring.monitoring_rules),
        *get_timing_module("end_time"),
        ReportPipe(ps),
    ]
    datastore: dict[str, Any] = Pipeline(modules).transform(
        {"hists": hists, "ref_hists": reference}
    )
    return datastore


def judge(
    bins: Mapping[int, BinCounts],
    reference: BinCounts,
    settings: DriftSettings,
    validation_unknown_ratio: float | None,
) -> Judgement:
    """Run popmon on the judged bins (all complete, enough rows) and read the latest lights."""
    latest_tb = max(bins)
    hists = to_histogrammar(bins, settings.bin_ns)
    ref = to_histogrammar({0: reference}, settings.bin_ns)
    ds = run_popmon(hists, ref, popmon_settings(settings))
    out = Judgement(latest_bin=pd.Timestamp(latest_tb * settings.bin_ns, unit="ns", tz="UTC"))
    for feature in POPMON_FEATURES:
        lights = ds["traffic_lights"].get(feature)
        if lights is None or lights.empty:
            continue
        last = lights.iloc[-1]
        cols = [c for c in lights.columns if c.startswith("ref_")]
        values = np.asarray(last[cols], dtype=float)
        values = values[np.isfinite(values)]
        red, yellow = int((values == 2).sum()), int((values == 1).sum())
        out.statuses[feature] = (int(values.max()) if values.size else 0, red, yellow)
        comp = ds["comparisons"][feature]
        out.values[feature] = float(comp[JUDGED_STATISTIC].iloc[-1])
    fb = judge_feedback(bins[latest_tb], settings, validation_unknown_ratio)
    if fb is not None:
        out.statuses[FEEDBACK_FEATURE] = fb[0]
        out.values[FEEDBACK_FEATURE] = fb[1]
    out.html = str(ds["html_report"])
    return out


def judge_feedback(
    b: BinCounts, settings: DriftSettings, validation_unknown_ratio: float | None
) -> tuple[tuple[int, int, int], float] | None:
    """Share of user tags unknown to the model against the model card's validation share.

    The baseline has no user tags, so popmon has no reference histogram for this feature; the
    rule is the same kind of effect size: an absolute rise of the (pooled) share.
    """
    if validation_unknown_ratio is None or b["fb_questions"] < settings.min_feedback_per_bin:
        return None
    ratio = b["fb_unknown"] / max(b["fb_tags"], 1)
    rise = ratio - validation_unknown_ratio
    if rise >= settings.red_unknown_tags_rise:
        return (2, 1, 0), ratio
    if rise >= settings.yellow_unknown_tags_rise:
        return (1, 0, 1), ratio
    return (0, 0, 0), ratio
