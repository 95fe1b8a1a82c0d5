"""Per-bin histogram counts: computed from store rows, merged across runs, fed to popmon.

Counts are kept as plain dicts so they can be merged (added) and saved as JSON; the bin edges
are fixed in code, so a day's counts mean the same thing in every run and in the baseline.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from tagger.columns import NO_TAG

# Fixed bin widths (origin 0): coarse enough that one bin holds a meaningful share of questions.
NUMERIC_BIN_WIDTHS: dict[str, float] = {
    "title_chars": 5,
    "body_chars": 100,
    "n_code_blocks": 1,
    "n_links": 1,
    "n_tokens": 2,
    "oov_ratio": 0.05,
    "max_score": 0.05,
    "n_predicted_tags": 1,
}
CATEGORICAL_FEATURES = ("top_tag",)
POPMON_FEATURES = (*NUMERIC_BIN_WIDTHS, *CATEGORICAL_FEATURES)
OTHER = "other"
TIME_AXIS = "date"

BinCounts = dict[str, Any]
"""``{"rows": n, "hist": {feature: {key: count}}, "fb_questions", "fb_tags", "fb_unknown"}``"""


def tag_categories(top_tags: pd.Series, n: int) -> list[str]:
    """The ``n`` most frequent top tags of the baseline (ties by name), then "(none)"."""
    counts = top_tags.astype(str).value_counts()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    cats = [str(t) for t, _ in ranked if t != NO_TAG][:n]
    return [*cats, NO_TAG]


def map_top_tag(values: pd.Series, categories: Iterable[str]) -> np.ndarray:
    """Tags outside the monitored categories become "other" (a bounded, honest category)."""
    values = values.astype(str)
    return np.where(values.isin(list(categories)), values.to_numpy(), OTHER)


def fingerprint(model_version: str, baseline_sha: str, bin_ns: int, categories: list[str]) -> str:
    """Saved counts are only reusable when model, baseline, binning and categories are the same."""
    blob = json.dumps(
        [model_version, baseline_sha, bin_ns, NUMERIC_BIN_WIDTHS, categories], sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _empty_bin() -> BinCounts:
    return {"rows": 0, "hist": {}, "fb_questions": 0, "fb_tags": 0, "fb_unknown": 0}


def count_rows(df: pd.DataFrame, bin_ns: int, categories: list[str]) -> dict[int, BinCounts]:
    """Histogram counts per time bin (bin index = epoch ns // bin width) of store rows."""
    if df.empty:
        return {}
    t_ns = df["created_at"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    tbin = t_ns // bin_ns
    out: dict[int, BinCounts] = {}
    sizes = pd.Series(tbin).value_counts()
    for tb, n in sizes.items():
        out[int(tb)] = _empty_bin()
        out[int(tb)]["rows"] = int(n)

    def add(feature: str, keys: np.ndarray) -> None:
        grouped = pd.DataFrame({"t": tbin, "k": keys}).groupby(["t", "k"], sort=False).size()
        for (tb, key), n in grouped.items():
            hist = out[int(tb)]["hist"].setdefault(feature, {})
            hist[str(key)] = hist.get(str(key), 0) + int(n)

    for feature, width in NUMERIC_BIN_WIDTHS.items():
        x = df[feature].to_numpy(dtype=np.float64)
        idx = np.floor(x / width + 1e-9)
        keys = np.where(np.isfinite(idx), idx, -(2**62)).astype(np.int64)
        add(feature, keys)
    add("top_tag", map_top_tag(df["top_tag"], categories))

    if "n_feedback_tags" in df.columns:
        tags = df["n_feedback_tags"].to_numpy(dtype=np.float64)
        unknown = df["n_unknown_feedback_tags"].to_numpy(dtype=np.float64)
        has = np.isfinite(tags) & (tags > 0)
        if has.any():
            fb = pd.DataFrame({"t": tbin[has], "n": tags[has], "u": unknown[has]})
            for tb, g in fb.groupby("t"):
                b = out[int(tb)]
                b["fb_questions"] += len(g)
                b["fb_tags"] += int(g["n"].sum())
                b["fb_unknown"] += int(g["u"].sum())
    return out


def merge(into: dict[int, BinCounts], new: Mapping[int, BinCounts]) -> dict[int, BinCounts]:
    """Add ``new`` counts to ``into`` (histograms are mergeable: counts simply add up)."""
    for tb, b in new.items():
        cur = into.setdefault(tb, _empty_bin())
        for key in ("rows", "fb_questions", "fb_tags", "fb_unknown"):
            cur[key] += b[key]
        for feature, hist in b["hist"].items():
            c = Counter(cur["hist"].get(feature, {}))
            c.update(hist)
            cur["hist"][feature] = dict(c)
    return into


NAN_KEY = str(-(2**62))


def _inner_json(feature: str, hist: Mapping[str, int]) -> dict[str, Any]:
    entries = float(sum(hist.values()))
    if feature in CATEGORICAL_FEATURES:
        return {
            "entries": entries,
            "bins:type": "Count",
            "bins": {k: float(v) for k, v in hist.items()},
        }
    return {
        "binWidth": float(NUMERIC_BIN_WIDTHS[feature]),
        "entries": entries,
        "bins:type": "Count",
        "bins": {k: float(v) for k, v in hist.items() if k != NAN_KEY},
        "nanflow:type": "Count",
        "nanflow": float(hist.get(NAN_KEY, 0)),
        "origin": 0.0,
    }


def to_histogrammar(bins: Mapping[int, BinCounts], bin_ns: int) -> dict[str, Any]:
    """popmon input: one ``date:<feature>`` histogrammar histogram per feature."""
    import histogrammar as hg

    out: dict[str, Any] = {}
    for feature in POPMON_FEATURES:
        inner = {
            str(tb): _inner_json(feature, b["hist"].get(feature, {})) for tb, b in bins.items()
        }
        data = {
            "binWidth": float(bin_ns),
            "entries": float(sum(v["entries"] for v in inner.values())),
            "bins:type": "Categorize" if feature in CATEGORICAL_FEATURES else "SparselyBin",
            "bins": inner,
            "nanflow:type": "Count",
            "nanflow": 0.0,
            "origin": 0.0,
        }
        h = hg.Factory.fromJson({"type": "SparselyBin", "data": data, "version": "1.1"})
        out[f"{TIME_AXIS}:{feature}"] = h
    return out


def baseline_counts(baseline: pd.DataFrame, bin_ns: int, categories: list[str]) -> BinCounts:
    """The whole baseline table as one bin: the external reference."""
    table = baseline.copy()
    table["created_at"] = pd.Timestamp(0, tz="UTC")
    counts = count_rows(table, bin_ns, categories)
    return counts[0]
