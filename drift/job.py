"""One drift run: read new store rows, update per-bin counts, judge, report, set metrics."""

from __future__ import annotations

import hashlib
import html
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from drift.assets import install_assets, localize_links
from drift.histograms import (
    baseline_counts,
    count_rows,
    fingerprint,
    merge,
    tag_categories,
)
from drift.judge import Judgement, judge
from drift.metrics import DriftMetrics
from drift.settings import DriftSettings
from drift.state import load_state, save_state
from store import PredictionStore, StoreError, open_store
from tagger.artefact import BASELINE_FILE, ArtefactError, load_baseline, read_card, resolve_version

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 10**9


@dataclass
class RunResult:
    ok: bool
    error: str | None = None
    new_rows: int = 0
    rows_analysed: int = 0
    bins_judged: int = 0
    bins_dropped: int = 0
    latest_bin: pd.Timestamp | None = None
    statuses: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None
    duration_seconds: float = 0.0


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def placeholder_html(now: pd.Timestamp, reason: str) -> str:
    """latest.html when nothing could be judged: say so instead of showing a stale report."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tagwatch drift</title></head>"
        f"<body><h1>tagwatch drift: nothing judged</h1><p>Run at {now.isoformat()}: "
        f"{html.escape(reason)}</p></body></html>\n"
    )


def read_new_rows(
    store: PredictionStore, start_ns: int, end_ns: int, after_seq: int, chunk_ns: int
) -> Any:
    """Rows of [start, end) with ``seq > after_seq``, a day (or a bin) at a time."""
    t = start_ns
    while t < end_ns:
        t1 = min(t + chunk_ns, end_ns)
        df = store.features(t / 1e9, t1 / 1e9, after_seq)
        if not df.empty:
            yield df
        t = t1


def run_once(
    settings: DriftSettings,
    metrics: DriftMetrics,
    store: PredictionStore | None = None,
    now: pd.Timestamp | None = None,
) -> RunResult:
    """A complete run. Never raises: failures are logged, counted and returned."""
    t0 = time.perf_counter()
    metrics.runs.inc()
    try:
        result = _run(settings, metrics, store, now)
    except Exception as exc:
        if isinstance(exc, (ArtefactError, StoreError, OSError)):
            log.error("drift run failed: %s", exc)
        else:
            log.exception("drift run failed: %s", exc)
        metrics.failures.inc()
        metrics.clear_all()
        metrics.bins_judged.set(0)
        result = RunResult(ok=False, error=str(exc))
    result.duration_seconds = time.perf_counter() - t0
    metrics.last_duration.set(result.duration_seconds)
    if result.ok:
        metrics.last_success.set(time.time())
    return result


def _run(
    settings: DriftSettings,
    metrics: DriftMetrics,
    store: PredictionStore | None,
    now: pd.Timestamp | None,
) -> RunResult:
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    bin_ns = settings.bin_ns
    end_tb = now.value // bin_ns  # the current bin is partial: never read nor judged
    start_tb = (now.value - settings.window_days * DAY_NS) // bin_ns + 1
    end_ns, start_ns = end_tb * bin_ns, start_tb * bin_ns

    path = resolve_version(settings.models_dir, settings.model_version)
    card = read_card(path)
    baseline = load_baseline(path)
    categories = tag_categories(baseline["top_tag"], settings.top_tags)
    fp = fingerprint(str(card.get("version")), _sha256(path / BASELINE_FILE), bin_ns, categories)

    state = load_state(settings.state_dir, fp)
    own_store = store is None
    store = open_store(settings.store_url) if store is None else store
    after_seq = state.last_seq
    new_rows, last_seq = 0, after_seq
    try:
        chunks = read_new_rows(store, start_ns, end_ns, after_seq, max(bin_ns, DAY_NS))
        for df in chunks:
            merge(state.bins, count_rows(df, bin_ns, categories))
            new_rows += len(df)
            last_seq = max(last_seq, int(df["seq"].max()))
    finally:
        if own_store:
            store.close()
    state.last_seq = last_seq
    state.bins = {tb: b for tb, b in state.bins.items() if start_tb <= tb < end_tb}
    save_state(settings.state_dir, state)

    enough = settings.min_rows_per_bin
    full = [(tb, b) for tb, b in sorted(state.bins.items()) if b["rows"] >= enough]
    judged = dict(full[-settings.max_bins :])  # short demo bins: keep the report readable
    result = RunResult(ok=True, new_rows=new_rows, bins_dropped=len(state.bins) - len(full))
    log.info(
        "read %d new rows (seq > %d); %d complete bins in the window, %d with fewer than %d rows",
        new_rows,
        after_seq,
        len(state.bins),
        result.bins_dropped,
        settings.min_rows_per_bin,
    )
    reports_dir = Path(settings.reports_dir)
    if not judged:
        reason = (
            f"no complete {settings.bin_size} bin with at least {settings.min_rows_per_bin} "
            f"rows in the last {settings.window_days} days "
            f"({sum(b['rows'] for b in state.bins.values())} rows in complete bins)"
        )
        log.warning("nothing to judge: %s", reason)
        metrics.clear_all()
        metrics.rows_analysed.set(0)
        metrics.bins_judged.set(0)
        metrics.latest_bin_timestamp.set(0)
        _write_atomic(reports_dir / "latest.html", placeholder_html(now, reason))
        return result

    validation = card.get("validation") or {}
    ref_unknown = validation.get("unknown_tag_ratio")
    reference = baseline_counts(baseline, bin_ns, categories)
    j: Judgement = judge(
        judged, reference, settings, None if ref_unknown is None else float(ref_unknown)
    )
    result.rows_analysed = sum(b["rows"] for b in judged.values())
    result.bins_judged = len(judged)
    result.latest_bin = j.latest_bin
    result.statuses = j.statuses
    result.values = j.values
    metrics.set_statuses(j.statuses)
    metrics.rows_analysed.set(result.rows_analysed)
    metrics.bins_judged.set(result.bins_judged)
    metrics.latest_bin_timestamp.set(j.latest_bin.value / 1e9)

    report = reports_dir / f"{now.date().isoformat()}.html"
    html_text = j.html
    if settings.report_online and not settings.report_cdn:
        html_text = localize_links(html_text, install_assets(reports_dir))
    _write_atomic(report, html_text)
    _write_atomic(reports_dir / "latest.html", html_text)
    result.report_path = report
    red = sorted(f for f, s in j.statuses.items() if s[0] == 2)
    yellow = sorted(f for f, s in j.statuses.items() if s[0] == 1)
    log.info(
        "judged %d bins (%d rows), latest %s: red %s, yellow %s; report %s (%.0f kB)",
        result.bins_judged,
        result.rows_analysed,
        j.latest_bin.isoformat(),
        red or "none",
        yellow or "none",
        report,
        len(html_text) / 1024,
    )
    return result
