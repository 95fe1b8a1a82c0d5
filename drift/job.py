"""One drift run: read new store rows, update per-bin counts, judge, report, set metrics."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import html
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from drift import sqlcounts
from drift.assets import install_assets, localize_links
from drift.changes import (
    TEXT_FEATURE,
    Changes,
    latest_json,
    read_changes,
    section_html,
    text_status,
)
from drift.histograms import (
    baseline_counts,
    count_rows,
    fingerprint,
    merge,
    tag_categories,
)
from drift.judge import FEEDBACK_FEATURE, Judgement, judge
from drift.metrics import FEATURES, DriftMetrics
from drift.settings import DriftSettings
from drift.state import DriftState, load_state, save_state
from drift.tags import TagReport, read_tags
from drift.tags import section_html as tags_section_html
from drift.versions import rows_of_version
from store import PredictionStore, StoreError, open_store
from store.retention import prune_reports
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
    count_seconds: float = 0.0  # of which reading and counting the new rows
    counts_path: str = ""  # "sql" or "pandas"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _rules_html(settings: DriftSettings) -> str:
    return (
        "<ul>"
        f"<li>Every {html.escape(settings.bin_size)} of stored predictions is one bin; a bin is "
        f"judged once complete with at least {settings.min_rows_per_bin} predictions (the "
        f"last {settings.max_bins} such bins of the last {settings.window_days} days).</li>"
        "<li>Each bin's histogram of every input/output feature is compared with the "
        "<b>held-out validation questions</b> of the served model (its baseline). The effect "
        "size is the largest change of one histogram bar's share of questions (popmon's "
        f"<code>max_prob_diff</code>): yellow from {settings.yellow_max_prob_diff:g}, red from "
        f"{settings.red_max_prob_diff:g}.</li>"
        "<li><code>unknown_feedback_tags_ratio</code>: the share of user-given tags that the "
        "model does not know, against the validation questions' share: yellow when it rises "
        f"by {settings.yellow_unknown_tags_rise:g}, red by {settings.red_unknown_tags_rise:g} "
        f"(bins with at least {settings.min_feedback_per_bin} questions with feedback).</li>"
        "</ul>"
    )


def placeholder_html(
    now: pd.Timestamp,
    reason: str,
    settings: DriftSettings | None = None,
    previous: tuple[str, dict[str, Any]] | None = None,
    version: str | None = None,
) -> str:
    """latest.html when nothing could be judged: the served version's state (waiting for its
    first complete bin) and the last report that judged something, never a stale report."""
    rules = "" if settings is None else f"<h2>What is judged</h2>{_rules_html(settings)}"
    head = "waiting for the first complete bin" if version else "nothing judged"
    served = (
        f"<p id='served'>Model version <code>{html.escape(version)}</code> is served; its "
        "questions are judged against its own baseline once a bin is complete.</p>"
        if version
        else ""
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>tagwatch drift: {head}</title></head>"
        f"<body style='font-family: Arial, sans-serif; max-width: 60em'>"
        f"<h1>tagwatch drift: {head}</h1>{served}<p>Run at {now.isoformat()}: "
        f"{html.escape(reason)}</p>{_previous_html(previous)}{rules}</body></html>\n"
    )


def _previous_html(previous: tuple[str, dict[str, Any]] | None) -> str:
    """A link to the last run report that judged something, with what it found."""
    if previous is None:
        return ""
    name, data = previous
    red = [f for f, v in (data.get("features") or {}).items() if v.get("status") == "red"]
    text = data.get("text") or {}
    words = ", ".join(w.get("word", "") for w in (text.get("current_words") or [])[:10])
    return (
        f"<p id='previous'>The last report: <a href='{html.escape(name)}'>{html.escape(name)}"
        f"</a> (model version <code>{html.escape(str(data.get('model_version')))}</code>, bin "
        f"{html.escape(str(data.get('bin_start')))}; red: {html.escape(', '.join(red) or 'none')}"
        + (f"; words of the drift: {html.escape(words)}" if words else "")
        + ").</p>"
    )


def waiting_html(settings: DriftSettings, started: pd.Timestamp, next_run: str) -> str:
    """latest.html from the drift process's first start until its first run writes a report."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        "<title>tagwatch drift: no report yet"
        "</title></head><body style='font-family: Arial, sans-serif; max-width: 60em'>"
        "<h1>tagwatch drift: no report yet</h1>"
        f"<p>The drift job started at {html.escape(started.isoformat())}. Its first run is "
        f"scheduled for <b>{html.escape(next_run)}</b> (cron <code>"
        f"{html.escape(settings.cron)}</code>, UTC); this page is then replaced by the "
        "report.</p>"
        f"<h2>What will be judged</h2>{_rules_html(settings)}"
        "<p>A red feature sets <code>tagwatch_drift_feature_status</code> to 2, which fires the "
        "DataDriftDetected alert.</p></body></html>\n"
    )


def ensure_latest(settings: DriftSettings, next_run: str, now: pd.Timestamp | None = None) -> bool:
    """Write the waiting page if there is no latest.html yet; True when written."""
    latest = Path(settings.reports_dir) / "latest.html"
    if latest.is_file():
        return False
    now = pd.Timestamp.now(tz="UTC") if now is None else now
    _write_atomic(latest, waiting_html(settings, now.floor("s"), next_run))
    return True


def _status_cell(status: int) -> str:
    colour, word = [("#2e7d32", "green"), ("#ef6c00", "yellow"), ("#c62828", "red")][status]
    return f"<td style='color: white; background: {colour}'>{word}</td>"


def summary_section(
    settings: DriftSettings,
    j: Judgement,
    judged: dict[int, Any],
    validation_unknown_ratio: float | None,
) -> str:
    """tagwatch's own section of the report: effect sizes, rules and the feedback feature."""
    rows = _effect_rows(settings, j, validation_unknown_ratio)
    fb_rows = _feedback_rows(settings, judged, validation_unknown_ratio)
    ref_text = "unknown" if validation_unknown_ratio is None else f"{validation_unknown_ratio:.3f}"
    return (
        '<section data-section-title="Summary" id="tagwatch-summary" class="bg-light">'
        '<div class="container" style="padding: 24px 0">'
        f"<h2>Latest bin: {j.latest_bin:%Y-%m-%d %H:%M} UTC</h2>"
        f"{_rules_html(settings)}"
        "<table class='table table-sm' id='tagwatch-effects'><thead><tr><th>feature</th>"
        "<th>status</th><th>measured (latest bin)</th><th>rule</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f"<h3 id='{FEEDBACK_FEATURE}'>unknown_feedback_tags_ratio per bin</h3>"
        f"<p>Share of user-given tags unknown to the model; validation share {ref_text}.</p>"
        "<table class='table table-sm' id='tagwatch-feedback'><thead><tr><th>bin (UTC)</th>"
        "<th>questions with feedback</th><th>unknown share</th><th>rise</th><th></th></tr>"
        f"</thead><tbody>{''.join(fb_rows)}</tbody></table>"
        "</div></section>"
    )


def _effect_rows(
    settings: DriftSettings, j: Judgement, validation_unknown_ratio: float | None
) -> list[str]:
    """One row per feature, worst first: what was measured against which rule."""
    rows = []
    for feature, (status, _red, _yellow) in sorted(
        j.statuses.items(), key=lambda kv: (-kv[1][0], kv[0])
    ):
        value = j.values.get(feature, float("nan"))
        if feature == FEEDBACK_FEATURE:
            ref = validation_unknown_ratio or 0.0
            measured = f"share {value:.3f} vs {ref:.3f}: rise {value - ref:+.3f}"
            rule = (
                f"rise ≥ {settings.yellow_unknown_tags_rise:g} yellow, "
                f"≥ {settings.red_unknown_tags_rise:g} red"
            )
        elif feature == TEXT_FEATURE:
            measured = f"ROC AUC {value:.3f} (0.5: reads like the baseline)"
            rule = (
                f"≥ {settings.text_yellow_auc:g} yellow, ≥ {settings.text_red_auc:g} red, "
                "and clear of the bin size's noise (see What changed)"
            )
        else:
            measured = f"max_prob_diff {value:.3f}"
            rule = (
                f"≥ {settings.yellow_max_prob_diff:g} yellow, ≥ {settings.red_max_prob_diff:g} red"
            )
        rows.append(
            f"<tr><td><a href='#{_anchor(feature)}'>{html.escape(feature)}"
            f"</a></td>{_status_cell(status)}<td>{measured}</td><td>{rule}</td></tr>"
        )
    return rows


def _anchor(feature: str) -> str:
    """Where a feature's row links: popmon's comparison, or the What changed section."""
    if feature == TEXT_FEATURE:
        return "tagwatch-changes"  # popmon's script renames the sections' own ids
    return f"{html.escape(feature)}-ref_max_prob_diff"


def _feedback_rows(
    settings: DriftSettings, judged: dict[int, Any], validation_unknown_ratio: float | None
) -> list[str]:
    """One row per judged bin: the unknown share of user tags, and whether it was judged."""
    fb_rows = []
    for tb, b in sorted(judged.items()):
        start = pd.Timestamp(tb * settings.bin_ns, unit="ns", tz="UTC")
        if b["fb_questions"]:
            share = b["fb_unknown"] / max(b["fb_tags"], 1)
            v = validation_unknown_ratio
            rise = "" if v is None else f"{share - v:+.3f}"
            enough = b["fb_questions"] >= settings.min_feedback_per_bin
            fb_rows.append(
                f"<tr><td>{start:%Y-%m-%d %H:%M}</td><td>{b['fb_questions']}</td>"
                f"<td class='fb-share'>{share:.3f}</td><td>{rise}</td>"
                f"<td>{'judged' if enough else 'too few to judge'}</td></tr>"
            )
        else:
            fb_rows.append(
                f"<tr><td>{start:%Y-%m-%d %H:%M}</td><td>0</td><td>–</td><td></td>"
                "<td>no feedback</td></tr>"
            )
    return fb_rows


def add_summary(report_html: str, section: str) -> str:
    """Insert tagwatch's section before popmon's first section after the overview."""
    # no favicon request (a 404 in the browser's console otherwise)
    report_html = report_html.replace("<head>", '<head><link rel="icon" href="data:,">', 1)
    marker = "<section data-section-title=Histograms"
    i = report_html.find(marker)
    if i < 0:
        i = report_html.rfind("</body>")
    if i < 0:
        return report_html + section
    return report_html[:i] + section + report_html[i:]


def effect_sizes(j: Judgement, validation_unknown_ratio: Any) -> dict[str, float]:
    """The measured value each rule compares: max_prob_diff, or the rise of the unknown share."""
    out = {f: v for f, v in j.values.items() if f != FEEDBACK_FEATURE}
    if FEEDBACK_FEATURE in j.values and validation_unknown_ratio is not None:
        out[FEEDBACK_FEATURE] = j.values[FEEDBACK_FEATURE] - float(validation_unknown_ratio)
    return out


def thresholds(settings: DriftSettings) -> dict[str, tuple[float, float]]:
    """(yellow, red) thresholds of every judged feature's effect size."""
    out = {f: (settings.yellow_max_prob_diff, settings.red_max_prob_diff) for f in FEATURES}
    out[FEEDBACK_FEATURE] = (settings.yellow_unknown_tags_rise, settings.red_unknown_tags_rise)
    out[TEXT_FEATURE] = (settings.text_yellow_auc, settings.text_red_auc)
    return out


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


class _ServedModel(NamedTuple):
    """The model version the drift run judges against, and what its counts depend on."""

    path: Path
    card: dict[str, Any]
    baseline: pd.DataFrame
    categories: list[str]
    fingerprint: str


def _run(
    settings: DriftSettings,
    metrics: DriftMetrics,
    store: PredictionStore | None,
    now: pd.Timestamp | None,
) -> RunResult:
    """Count the new rows, judge the complete bins of the window, report and set metrics."""
    now = pd.Timestamp.now(tz="UTC") if now is None else pd.Timestamp(now).tz_convert("UTC")
    bin_ns = settings.bin_ns
    end_tb = now.value // bin_ns  # the current bin is partial: never read nor judged
    start_tb = (now.value - settings.window_days * DAY_NS) // bin_ns + 1
    model = _served_model(settings)
    t0 = time.perf_counter()
    state, after_seq, new_rows, path = _update_counts(settings, store, model, start_tb, end_tb)
    count_seconds = time.perf_counter() - t0

    enough = settings.min_rows_per_bin
    full = [(tb, b) for tb, b in sorted(state.bins.items()) if b["rows"] >= enough]
    judged = dict(full[-settings.max_bins :])  # short demo bins: keep the report readable
    result = RunResult(
        ok=True,
        new_rows=new_rows,
        bins_dropped=len(state.bins) - len(full),
        count_seconds=count_seconds,
        counts_path=path,
    )
    log.info(
        "read %d new rows (seq > %d); %d complete bins in the window, %d with fewer than %d rows",
        new_rows,
        after_seq,
        len(state.bins),
        result.bins_dropped,
        settings.min_rows_per_bin,
    )
    if not judged:
        _report_nothing_judged(settings, metrics, state, now, str(model.card.get("version")))
        return result

    ref_unknown = (model.card.get("validation") or {}).get("unknown_tag_ratio")
    j = _judge_bins(settings, model, judged, ref_unknown)
    changes = _what_changed(settings, store, model, j, now)
    tags = _tag_quality(settings, store, model, j.latest_bin)
    _record_judgement(settings, metrics, result, j, judged, ref_unknown)
    version = str(model.card.get("version"))
    _write_report(settings, result, j, judged, ref_unknown, now, version, changes, tags)
    return result


@contextlib.contextmanager
def _reading(settings: DriftSettings, store: PredictionStore | None) -> Iterator[PredictionStore]:
    """The given store, or a read-only one opened (and closed) for this step."""
    if store is not None:
        yield store
        return
    own = open_store(settings.store_url, readonly=True)
    try:
        yield own
    finally:
        own.close()


def _what_changed(
    settings: DriftSettings,
    store: PredictionStore | None,
    model: _ServedModel,
    j: Judgement,
    now: pd.Timestamp,
) -> Changes | None:
    """The latest bin's text judgement and named changes; its status joins the judgement.
    A failure here is logged and leaves the other features judged (None)."""
    if not settings.text_enabled:
        return None
    try:
        with _reading(settings, store) as reader:
            changes = read_changes(
                settings, reader, model.path, model.card, model.baseline, j.latest_bin, now
            )
    except Exception:
        log.exception("text judgement of the bin %s failed", j.latest_bin)
        return None
    status = text_status(changes)
    if status is not None and changes.text.auc is not None:
        j.statuses[TEXT_FEATURE] = status
        j.values[TEXT_FEATURE] = changes.text.auc
    log.info("text of the bin %s: %s", j.latest_bin, changes.text.reason)
    return changes


def _tag_quality(
    settings: DriftSettings,
    store: PredictionStore | None,
    model: _ServedModel,
    bin_start: pd.Timestamp,
) -> TagReport | None:
    """Each tag's F1 over the latest judged bin against its baseline F1 (drift/tags.py); a
    failure is logged and leaves the rest of the report (None)."""
    since = bin_start
    until = bin_start + pd.Timedelta(settings.bin_size)
    vocabulary = [str(t) for t in model.card.get("tags") or []]
    try:
        with _reading(settings, store) as reader:
            tags = read_tags(reader, model.path, vocabulary, since, until, settings.tag_rules)
    except Exception:
        log.exception("per-tag quality of the bin %s failed", bin_start)
        return None
    worst = [f"{r['tag']} {r['status']}" for r in tags.rows if r["status"] != "green"]
    log.info(
        "tags of the bin %s: %d questions with feedback, %d tags judged; %s",
        bin_start,
        tags.questions,
        tags.judged,
        ", ".join(worst[:10]) or "none red or yellow",
    )
    return tags


def _served_model(settings: DriftSettings) -> _ServedModel:
    """Card, baseline and categories of the served version; the fingerprint keys the state."""
    path = resolve_version(settings.models_dir, settings.model_version)
    card = read_card(path)
    baseline = load_baseline(path)
    categories = tag_categories(baseline["top_tag"], settings.top_tags)
    fp = fingerprint(
        str(card.get("version")), _sha256(path / BASELINE_FILE), settings.bin_ns, categories
    )
    return _ServedModel(path, card, baseline, categories, fp)


def _update_counts(
    settings: DriftSettings,
    store: PredictionStore | None,
    model: _ServedModel,
    start_tb: int,
    end_tb: int,
) -> tuple[DriftState, int, int, str]:
    """Add the store's new rows to the saved counts, keep the window's bins, save the state.

    Returns the state, the ``seq`` read after, the number of new rows and the path used."""
    own_store = store is None
    # a reader: read-only, and a missing store is an error, never a new empty file
    store = open_store(settings.store_url, readonly=True) if store is None else store
    try:
        identity = getattr(store, "identity", None)
        state = load_state(settings.state_dir, model.fingerprint, identity() if identity else None)
    except BaseException:
        if own_store:
            store.close()
        raise
    after_seq = state.last_seq
    pending: dict[int, Any] = {}
    try:
        source = _sql_source(settings, store)
        if source is None:
            new_rows, last_seq = _count_new_rows(settings, store, model, state, start_tb, end_tb)
        else:
            new_rows, last_seq, pending = _count_new_rows_sql(
                settings, source, model, state, start_tb, end_tb
            )
    finally:
        if own_store:
            store.close()
    state.last_seq = last_seq
    state.bins = {tb: b for tb, b in state.bins.items() if start_tb <= tb < end_tb}
    save_state(settings.state_dir, state)
    if pending:  # counted for this run's judgement, not remembered (drift/sqlcounts.py)
        bins = merge(copy.deepcopy(state.bins), pending)
        state = replace(state, bins={tb: b for tb, b in bins.items() if start_tb <= tb < end_tb})
    return state, after_seq, new_rows, "pandas" if source is None else "sql"


def _sql_source(settings: DriftSettings, store: PredictionStore) -> sqlcounts.Source | None:
    """Where the per-bin counts are computed: the database (a source) or pandas (None)."""
    if settings.drift_counts == "pandas" or not sqlcounts.supports_bin(settings.bin_ns):
        return None
    # "sql" and "auto": the database's GROUP BY is faster than reading rows into pandas on
    # PostgreSQL and on SQLite alike (benchmarks/drift_scale.py); pandas for other stores
    return sqlcounts.source_for(store)


def _count_new_rows_sql(
    settings: DriftSettings,
    source: sqlcounts.Source,
    model: _ServedModel,
    state: DriftState,
    start_tb: int,
    end_tb: int,
) -> tuple[int, int, dict[int, Any]]:
    """As :func:`_count_new_rows`, in the database: (rows counted, new last seq, pending)."""
    version = str(model.card.get("version"))
    counts = sqlcounts.count_new_rows(
        source,
        start_ns=start_tb * settings.bin_ns,
        end_ns=end_tb * settings.bin_ns,
        bin_ns=settings.bin_ns,
        after_seq=state.last_seq,
        categories=model.categories,
        exclude_versions=sqlcounts.other_versions(version, settings.models_dir),
    )
    merge(state.bins, counts.settled)
    log.info(
        "counted in SQL: %d rows (%d remembered up to seq %d) in %.2f s",
        counts.rows,
        sum(b["rows"] for b in counts.settled.values()),
        counts.horizon,
        sum(counts.seconds.values()),
    )
    return counts.rows, counts.horizon, counts.pending


def _count_new_rows(
    settings: DriftSettings,
    store: PredictionStore,
    model: _ServedModel,
    state: DriftState,
    start_tb: int,
    end_tb: int,
) -> tuple[int, int]:
    """Merge the per-bin counts of rows after ``state.last_seq``: (rows read, last seq)."""
    bin_ns = settings.bin_ns
    new_rows, last_seq = 0, state.last_seq
    chunks = read_new_rows(
        store, start_tb * bin_ns, end_tb * bin_ns, state.last_seq, max(bin_ns, DAY_NS)
    )
    for df in chunks:
        # each version against its own baseline: rows of other versions are not counted
        mine = rows_of_version(df, str(model.card.get("version")), settings.models_dir)
        merge(state.bins, count_rows(mine, bin_ns, model.categories))
        new_rows += len(df)
        last_seq = max(last_seq, int(df["seq"].max()))
    return new_rows, last_seq


def _report_nothing_judged(
    settings: DriftSettings,
    metrics: DriftMetrics,
    state: DriftState,
    now: pd.Timestamp,
    version: str,
) -> None:
    """No bin to judge: clear the lights and say why in latest.html, not a stale report; the
    last run's report that judged something (another version's, after a promotion) is linked."""
    reason = (
        f"no complete {settings.bin_size} bin with at least {settings.min_rows_per_bin} "
        f"rows of model version {version} in the last {settings.window_days} days "
        f"({sum(b['rows'] for b in state.bins.values())} rows in complete bins)"
    )
    log.warning("nothing to judge: %s", reason)
    metrics.clear_all()
    metrics.rows_analysed.set(0)
    metrics.bins_judged.set(0)
    metrics.latest_bin_timestamp.set(0)
    reports_dir = Path(settings.reports_dir)
    previous = last_report(reports_dir)
    _write_atomic(
        reports_dir / "latest.html", placeholder_html(now, reason, settings, previous, version)
    )
    waiting = latest_json(None, {}, {}, version, now, "latest.html") | {"waiting": reason}
    if previous is not None:
        waiting["previous_report"] = previous[0]
    _write_atomic(reports_dir / "latest.json", json.dumps(waiting, indent=1) + "\n")


def last_report(reports_dir: Path) -> tuple[str, dict[str, Any]] | None:
    """(file name, its latest.json) of the newest run report that judged a bin, if any."""
    for path in sorted(Path(reports_dir).glob("*T*Z.json"), reverse=True):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("features"):
            return path.with_suffix(".html").name, data
    return None


def _judge_bins(
    settings: DriftSettings, model: _ServedModel, judged: dict[int, Any], ref_unknown: Any
) -> Judgement:
    """popmon's judgement of the bins against the served model's baseline."""
    reference = baseline_counts(model.baseline, settings.bin_ns, model.categories)
    return judge(judged, reference, settings, None if ref_unknown is None else float(ref_unknown))


def _record_judgement(
    settings: DriftSettings,
    metrics: DriftMetrics,
    result: RunResult,
    j: Judgement,
    judged: dict[int, Any],
    ref_unknown: Any,
) -> None:
    """The judgement into the run's result and the drift metrics."""
    result.rows_analysed = sum(b["rows"] for b in judged.values())
    result.bins_judged = len(judged)
    result.latest_bin = j.latest_bin
    result.statuses = j.statuses
    result.values = j.values
    metrics.set_statuses(j.statuses)
    metrics.set_effects(effect_sizes(j, ref_unknown), thresholds(settings))
    metrics.rows_analysed.set(result.rows_analysed)
    metrics.bins_judged.set(result.bins_judged)
    metrics.latest_bin_timestamp.set(j.latest_bin.value / 1e9)


def _write_report(
    settings: DriftSettings,
    result: RunResult,
    j: Judgement,
    judged: dict[int, Any],
    ref_unknown: Any,
    now: pd.Timestamp,
    version: str,
    changes: Changes | None = None,
    tags: TagReport | None = None,
) -> None:
    """This run's report (HTML and JSON, named by the run's time: an email links the report
    that fired it), also as latest.html / latest.json; one log line of lights."""
    reports_dir = Path(settings.reports_dir)
    name = run_report_name(now)
    report = reports_dir / f"{name}.html"
    section = summary_section(
        settings, j, judged, None if ref_unknown is None else float(ref_unknown)
    )
    if tags is not None:
        section = tags_section_html(tags) + section
    if changes is not None:
        section = section_html(changes) + section
    html_text = add_summary(j.html, section)
    if settings.report_online and not settings.report_cdn:
        html_text = localize_links(html_text, install_assets(reports_dir))
    data = latest_json(changes, j.statuses, j.values, version, now, report.name, tags)
    json_text = json.dumps(data, indent=1, default=str) + "\n"
    _write_atomic(report, html_text)
    _write_atomic(report.with_suffix(".json"), json_text)
    _write_atomic(reports_dir / "latest.html", html_text)
    _write_atomic(reports_dir / "latest.json", json_text)
    result.report_path = report
    # run reports follow the stored questions' retention (TAGWATCH_RETENTION_DAYS)
    prune_reports(reports_dir, settings.retention_days, now.date())
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


def run_report_name(now: pd.Timestamp) -> str:
    """``2026-03-02T020000Z``: one report per run, sorted by time, safe in a URL."""
    return now.tz_convert("UTC").strftime("%Y-%m-%dT%H%M%SZ")
