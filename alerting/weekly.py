"""The weekly summary: what the model and the service did over the last 7 days.

``collect`` reads counts from the prediction store (predictions, feedback, coverage and
Jaccard per day: exact, where Prometheus's ``increase()`` extrapolates over a window) and the
latest problematic questions; it asks Prometheus for what only Prometheus has (latency
quantiles, 5xx responses, alert episodes, drift status). Each section that cannot be filled is
named in ``missing`` instead of failing the report. Every alert that fired gets the first steps
of its runbook section ("What to do"). ``render`` turns it into HTML + text,
``build_message`` into one email with the charts as inline (CID) images, and ``run_weekly``
writes ``reports/weekly/<date>.html`` before sending, so an SMTP outage loses nothing.
"""

from __future__ import annotations

import base64
import email.policy
import itertools
import logging
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from alerting.charts import bar_chart, line_chart
from alerting.mailer import send_email
from alerting.metrics import WeeklyMetrics
from alerting.prom import PrometheusClient, PrometheusError, Series
from alerting.settings import AlertingSettings
from exporter.signing import read_secret, signed_query
from store import PredictionStore, open_store
from store.retention import prune_reports

log = logging.getLogger("alerting.weekly")

DAY = 86400.0
ALERT_STEP = 60.0  # resolution of alert episodes: one point per minute (10,080 a week)
DRIFT_STATUS = {0: "green", 1: "yellow", 2: "red"}

RUNBOOK_FILE = Path(__file__).resolve().parents[1] / "docs" / "runbook.md"
STORE_DAILY = ("predictions", "feedback", "coverage", "jaccard")
PREDICT = 'job="predictor"'
DAILY_QUERIES = {
    "errors_5xx": (
        f'sum(increase(tagwatch_http_requests_total{{{PREDICT},status=~"5.."}}[1d])) '
        f"or sum(increase(tagwatch_predictions_total{{{PREDICT}}}[1d])) * 0"
    ),
    **{
        f"p{q}": (
            f"histogram_quantile(0.{q}, sum by (le) (increase("
            f'tagwatch_http_request_duration_seconds_bucket{{{PREDICT},endpoint="predict"}}[1d])))'
        )
        for q in ("50", "95", "99")
    },
}
VALIDATION_QUERIES = {
    "coverage": "max(tagwatch_model_validation_coverage_ratio)",
    "jaccard": "max(tagwatch_model_validation_jaccard_ratio)",
}
PROBLEM_TITLES = {
    "lowest_jaccard": "Lowest Jaccard with feedback",
    "empty_predictions": "Empty predictions",
    "highest_oov": "Highest oov_ratio (words unknown to the model)",
}


@dataclass
class AlertSummary:
    alertname: str
    severity: str
    episodes: int
    minutes: float
    labels: list[str]


@dataclass
class Advice:
    """What to do about one alert that fired: its runbook section's first steps and link."""

    alertname: str
    steps: str
    link: str


@dataclass
class WeeklyReport:
    start: datetime
    end: datetime
    days: list[str] = field(default_factory=list)
    daily: dict[str, list[float | None]] | None = None
    validation: dict[str, float] = field(default_factory=dict)
    alerts: list[AlertSummary] | None = None
    drift: list[dict[str, Any]] | None = None
    problematic: dict[str, list[dict[str, Any]]] | None = None
    # the week's feedback per credential it came with ("token", "open", "unknown"); None: not
    # read (the store is missing)
    feedback_sources: dict[str, int] | None = None
    retrain: str | None = None  # the lifecycle's retrain summary line (None: not read)
    # what changed this week (drift.changes.period_changes): new tags, new words, questions
    changes: dict[str, Any] | None = None
    # tags getting worse / better against their baseline F1 (drift.tags.period_tags)
    tags: dict[str, Any] | None = None
    advice: list[Advice] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- pure computations


def day_points(end: datetime, days: int) -> list[datetime]:
    """Evaluation times of the daily queries: each covers the 24 h before it, the last is ``end``.

    Rows are labelled with their end's date (a Monday 08:00 run: Tue 08:00 ... Mon 08:00).
    """
    return [end - timedelta(days=days - 1 - i) for i in range(days)]


def align(series: list[Series], points: list[datetime]) -> list[float | None]:
    """Values of a one-series result at the day points (None where Prometheus had nothing)."""
    if not series:
        return [None] * len(points)
    by_time = {round(t): v for t, v in series[0].points}
    out: list[float | None] = []
    for p in points:
        v = by_time.get(round(p.timestamp()))
        out.append(None if v is None or v != v else v)  # NaN (0/0) -> None
    return out


def alert_episodes(series: Iterable[Series], step: float = ALERT_STEP) -> list[AlertSummary]:
    """Firing episodes and minutes per alert from per-minute ``max_over_time(ALERTS[1m])``.

    The max over each step catches episodes shorter than the step. An episode is a run of
    samples less than two steps apart; minutes count samples x step (rounded up per minute).
    """
    acc: dict[tuple[str, str], AlertSummary] = {}
    for s in series:
        name = s.labels.get("alertname", "?")
        severity = s.labels.get("severity", "")
        key = (name, severity)
        summary = acc.setdefault(key, AlertSummary(name, severity, 0, 0.0, []))
        times = sorted(t for t, _ in s.points)
        if not times:
            continue
        summary.episodes += 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 1.5 * step)
        summary.minutes += len(times) * step / 60.0
        detail = ", ".join(
            f"{k}={v}"
            for k, v in sorted(s.labels.items())
            if k not in {"__name__", "alertname", "alertstate", "severity", "job"}
        )
        if detail and detail not in summary.labels:
            summary.labels.append(detail)
    return sorted(acc.values(), key=lambda a: (a.severity != "critical", -a.minutes, a.alertname))


def _seconds(times: Any) -> Any:
    return (times - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()


def store_daily(
    features: Any, labelled: Any, points: list[datetime]
) -> dict[str, list[float | None]]:
    """Per day [point - 1 day, point): predictions and feedback counted, mean coverage/Jaccard.

    ``features`` and ``labelled`` are the store's frames (``created_at`` in UTC) of the week.
    """
    f_at = _seconds(features["created_at"]) if len(features) else None
    l_at = _seconds(labelled["created_at"]) if len(labelled) else None
    out: dict[str, list[float | None]] = {k: [] for k in STORE_DAILY}
    for p in points:
        t1 = p.timestamp()
        t0 = t1 - DAY
        if f_at is None:
            out["predictions"].append(0.0)
            out["feedback"].append(0.0)
        else:
            in_day = (f_at >= t0) & (f_at < t1)
            out["predictions"].append(float(in_day.sum()))
            out["feedback"].append(float(features["n_feedback_tags"][in_day].notna().sum()))
        day = labelled[(l_at >= t0) & (l_at < t1)] if l_at is not None else labelled
        for name in ("coverage", "jaccard"):
            out[name].append(float(day[name].mean()) if len(day) else None)
    return out


def feedback_sources(labelled: Any) -> dict[str, int]:
    """The week's feedback per source (store.records.FEEDBACK_SOURCES), largest first: feedback
    that came without the feedback token ("open") is the retraining data anyone could write."""
    if not len(labelled) or "source" not in labelled.columns:
        return {}
    counts = labelled["source"].value_counts()
    return {str(k): int(counts[k]) for k in sorted(counts.index, key=lambda k: (-counts[k], k))}


def _runbook_sections(text: str) -> dict[str, str]:
    """``{anchor: body}`` of the runbook's ``## Name`` sections (anchor: lower-case name)."""
    sections: dict[str, str] = {}
    for block in re.split(r"^## ", text, flags=re.M)[1:]:
        head, _, body = block.partition("\n")
        sections[re.sub(r"[^a-z0-9_-]", "", head.strip().lower())] = body.strip()
    return sections


def runbook_advice(
    alertnames: Iterable[str], base_url: str, runbook: Path = RUNBOOK_FILE
) -> list[Advice]:
    """The first steps ("Fix:" paragraph, else "Check:") of each alert's runbook section.

    An alert without its own section uses the longest section name it starts with
    (PredictorLatencySLOBurnFast -> PredictorLatencySLOBurn).
    """
    try:
        sections = _runbook_sections(runbook.read_text(encoding="utf-8"))
    except OSError:
        sections = {}
    out = []
    for name in dict.fromkeys(alertnames):
        key = name.lower()
        anchor = (
            key
            if key in sections
            else max((a for a in sections if key.startswith(a)), key=len, default=key)
        )
        body = sections.get(anchor, "")
        steps = ""
        for label in ("Fix:", "Check:"):
            m = re.search(rf"^{label}(.*?)(?:\n\n|\Z)", body, flags=re.M | re.S)
            if m:
                steps = f"{label[:-1]}: " + " ".join(m.group(1).split())
                break
        if not steps and body:
            steps = " ".join(body.split("\n\n")[0].split())
        link = f"{base_url}/docs/runbook.md#{anchor}"
        out.append(Advice(name, steps or "See the runbook.", link))
    return out


def question_link(
    row: dict[str, Any],
    predictor_url: str,
    secret: str | None = None,
    ttl_seconds: float = 14 * 86_400,
) -> str:
    """The question's own URL when it has one (replayed StackOverflow questions), else ours:
    signed with the link secret so that it opens without a token until it expires."""
    url = row.get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return url
    pid = quote(str(row["id"]), safe="")
    link = f"{predictor_url}/predictions/{pid}"
    if secret is None:
        return link
    return f"{link}?{signed_query(secret, str(row['id']), ttl_seconds)}"


# ---------------------------------------------------------------- collecting


def collect(
    settings: AlertingSettings,
    end: datetime,
    prometheus: PrometheusClient,
    store: PredictionStore | None,
) -> WeeklyReport:
    """Fill every section it can; name the others in ``report.missing`` with the reason."""
    start = end - timedelta(days=settings.weekly_days)
    points = day_points(end, settings.weekly_days)
    report = WeeklyReport(start=start, end=end, days=[p.strftime("%a %d %b") for p in points])
    daily: dict[str, list[float | None]] = {
        k: [None] * len(points) for k in (*STORE_DAILY, *DAILY_QUERIES)
    }
    _collect_store_daily(settings, report, daily, store, points, end)
    _collect_prometheus_daily(report, daily, prometheus, points, end)
    report.daily = daily
    _collect_alerts(settings, report, prometheus, start, end)
    _collect_drift(settings, report, prometheus, end)
    _collect_retrain(settings, report, prometheus, end)
    _collect_problematic(settings, report, store, start)
    # the week's new tags, words and questions against the served model; the tags whose F1
    # from feedback fell or rose most against its per-tag baseline (the store's SQL)
    report.changes = _store_section(
        settings, report, store, "what changed this week",
        lambda st: week_changes(settings, st, start, end),
    )  # fmt: skip
    report.tags = _store_section(
        settings, report, store, "tags getting worse",
        lambda st: week_tags(settings, st, start, end),
    )  # fmt: skip
    return report


def week_tags(
    settings: AlertingSettings, store: PredictionStore, start: datetime, end: datetime
) -> dict[str, Any]:
    """:func:`drift.tags.period_tags` of [start, end), with the week before for context."""
    from drift.tags import period_tags, read_tags
    from tagger.artefact import read_card, resolve_version

    path = resolve_version(settings.models_dir, "latest")
    card = read_card(path)
    vocabulary = [str(t) for t in card.get("tags") or []]
    since, until = pd.Timestamp(start), pd.Timestamp(end)
    week = read_tags(store, path, vocabulary, since, until, settings.tag_rules)
    before = start - (end - start)
    previous = store.tag_counts(before.timestamp(), start.timestamp(), vocabulary)
    out = period_tags(week, previous, n=10)
    out["model_version"] = str(card.get("version"))
    return out


def _store_section(
    settings: AlertingSettings,
    report: WeeklyReport,
    store: PredictionStore | None,
    name: str,
    compute: Callable[[PredictionStore], dict[str, Any]],
) -> dict[str, Any] | None:
    """A section computed from the store, or None with the reason in ``report.missing``: a
    missing model or a store failure must not cost the rest of the report."""
    if store is None:
        report.missing[name] = f"store not found ({settings.store_url})"
        return None
    try:
        return compute(store)
    except Exception as exc:
        report.missing[name] = f"{type(exc).__name__}: {exc}"
        return None


def week_changes(
    settings: AlertingSettings, store: PredictionStore, start: datetime, end: datetime
) -> dict[str, Any]:
    """:func:`drift.changes.period_changes` of [start, end) against the week before it."""
    from drift.changes import model_vocabulary, period_changes
    from drift.text import TextRules
    from tagger.artefact import load_baseline, read_card, resolve_version

    path = resolve_version(settings.models_dir, "latest")
    limit = settings.weekly_text_max_titles
    before = start - (end - start)
    current = store.texts(start.timestamp(), end.timestamp(), limit)
    previous = store.texts(before.timestamp(), start.timestamp(), limit)
    rules = TextRules(max_titles=limit, n_questions=3)
    card = read_card(path)
    out = period_changes(
        current, previous, card, load_baseline(path), model_vocabulary(path), rules
    )
    out["model_version"] = str(card.get("version"))
    return out


def _collect_store_daily(
    settings: AlertingSettings,
    report: WeeklyReport,
    daily: dict[str, list[float | None]],
    store: PredictionStore | None,
    points: list[datetime],
    end: datetime,
) -> None:
    """Exact per-day counts from the store, where Prometheus would extrapolate."""
    if store is None:
        report.missing["volume and quality per day"] = f"store not found ({settings.store_url})"
        return
    try:
        first = points[0].timestamp() - DAY
        labelled = store.labelled(first, end.timestamp())
        daily.update(store_daily(store.features(first, end.timestamp()), labelled, points))
        report.feedback_sources = feedback_sources(labelled)
    except Exception as exc:  # any store failure must not cost the rest of the report
        report.missing["volume and quality per day"] = f"store {settings.store_url}: {exc}"


def _collect_prometheus_daily(
    report: WeeklyReport,
    daily: dict[str, list[float | None]],
    prometheus: PrometheusClient,
    points: list[datetime],
    end: datetime,
) -> None:
    """Latency and 5xx per day and the validation scores: only Prometheus has them."""
    try:
        for name, expr in DAILY_QUERIES.items():
            daily[name] = align(prometheus.query_range(expr, points[0], points[-1], DAY), points)
        for name, expr in VALIDATION_QUERIES.items():
            result = prometheus.query(expr, end)
            if result:
                report.validation[name] = result[0].points[0][1]
    except PrometheusError as exc:
        report.missing["latency and 5xx per day"] = str(exc)


def _collect_alerts(
    settings: AlertingSettings,
    report: WeeklyReport,
    prometheus: PrometheusClient,
    start: datetime,
    end: datetime,
) -> None:
    """The week's alert episodes, each with its runbook's first steps."""
    try:
        report.alerts = alert_episodes(
            prometheus.query_range(
                f'max_over_time(ALERTS{{alertstate="firing"}}[{ALERT_STEP:.0f}s])',
                start,
                end,
                ALERT_STEP,
            )
        )
        report.advice = runbook_advice(
            (a.alertname for a in report.alerts), settings.runbook_base_url
        )
    except PrometheusError as exc:
        report.missing["alert episodes"] = str(exc)


def _collect_drift(
    settings: AlertingSettings, report: WeeklyReport, prometheus: PrometheusClient, end: datetime
) -> None:
    """Each drift feature's latest and worst status of the week."""
    try:
        latest = {
            s.labels.get("feature", "?"): s.points[0][1]
            for s in prometheus.query("max by (feature) (tagwatch_drift_feature_status)", end)
        }
        worst = {
            s.labels.get("feature", "?"): s.points[0][1]
            for s in prometheus.query(
                "max by (feature) (max_over_time(tagwatch_drift_feature_status"
                f"[{settings.weekly_days}d]))",
                end,
            )
        }
        report.drift = _drift_rows(latest, worst)
    except PrometheusError as exc:
        report.missing["drift status per feature"] = str(exc)


def _drift_rows(latest: dict[str, float], worst: dict[str, float]) -> list[dict[str, Any]]:
    """Status words per feature; a feature absent now but seen this week says "absent"."""
    return [
        {
            "feature": f,
            "latest": DRIFT_STATUS.get(int(latest[f]), "?") if f in latest else "absent",
            "worst": DRIFT_STATUS.get(int(worst[f]), "?"),
        }
        for f in sorted(worst)
    ]


def _collect_retrain(
    settings: AlertingSettings, report: WeeklyReport, prometheus: PrometheusClient, end: datetime
) -> None:
    """The lifecycle's retrain summary line of the week."""
    try:
        report.retrain = retrain_summary(prometheus, end, settings.weekly_days)
    except PrometheusError as exc:
        report.missing["retraining"] = str(exc)


def _collect_problematic(
    settings: AlertingSettings,
    report: WeeklyReport,
    store: PredictionStore | None,
    start: datetime,
) -> None:
    """The latest problematic questions, each with a signed read-only link."""
    if store is None:
        report.missing["problematic questions"] = f"store not found ({settings.store_url})"
        return
    try:
        rows = store.problematic(start.timestamp(), settings.weekly_problematic_limit)
        for items in rows.values():
            for row in items:
                row["link"] = question_link(
                    row,
                    settings.predictor_url,
                    read_secret(settings.link_secret_file, "TAGWATCH_LINK_SECRET_FILE"),
                    settings.link_ttl_days * 86_400,
                )
        report.problematic = rows
    except Exception as exc:  # any store failure must not cost the rest of the report
        report.missing["problematic questions"] = f"store {settings.store_url}: {exc}"


def retrain_line(
    outcomes: dict[str, float],
    champion: float | None,
    challenger: float | None,
    recovery: float | None,
    min_recovery: float,
) -> str:
    """One line on the week's retraining: outcomes, the last gate's Jaccard, the drift verdict."""
    from lifecycle.gate import drift_verdict

    runs = {k: round(v) for k, v in outcomes.items() if round(v) > 0}
    if not runs:
        return "No retrain this week."
    head = "Retrains this week: " + ", ".join(f"{n} {k}" for k, n in sorted(runs.items()))
    if challenger is None:
        return head + "."
    gate = f"last gate: Jaccard champion {champion:.3f} vs challenger {challenger:.3f}"
    if champion is None:
        gate = f"last gate: challenger Jaccard {challenger:.3f}"
    return f"{head}; {gate}; {drift_verdict(recovery, min_recovery)}."


def retrain_summary(prometheus: PrometheusClient, end: datetime, days: int) -> str:
    def one(expr: str) -> float | None:
        result = prometheus.query(expr, end)
        if not result:
            return None
        value = float(result[0].points[0][1])
        return None if math.isnan(value) else value

    outcomes = {
        s.labels.get("outcome", "?"): float(s.points[0][1])
        for s in prometheus.query(
            f"sum by (outcome) (increase(tagwatch_retrain_runs_total[{days}d]))", end
        )
    }
    return retrain_line(
        outcomes,
        one("max(tagwatch_gate_champion_jaccard_ratio)"),
        one("max(tagwatch_gate_challenger_jaccard_ratio)"),
        one("max(tagwatch_retrain_drift_recovery_ratio)"),
        one("max(tagwatch_retrain_drift_recovery_min_ratio)") or 0.5,
    )


# ---------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html_email: str  # images as cid: references
    html_file: str  # images as data: URIs (a standalone file)
    charts: dict[str, bytes]  # name -> PNG


def charts_of(report: WeeklyReport) -> dict[str, bytes]:
    if report.daily is None:
        return {}
    d = report.daily
    refs = {f"validation {k}": v for k, v in report.validation.items()}
    return {
        "volume": bar_chart(
            "Requests per day",
            report.days,
            {"predictions": d["predictions"], "feedback": d["feedback"], "5xx": d["errors_5xx"]},
        ),
        "latency": line_chart(
            "Predict latency per day (s)",
            report.days,
            {"p50": d["p50"], "p95": d["p95"], "p99": d["p99"]},
            {"SLO 0.25 s": 0.25},
        ),
        "quality": line_chart(
            "Mean coverage and Jaccard of feedback per day",
            report.days,
            {"coverage": d["coverage"], "jaccard": d["jaccard"]},
            refs,
        ),
    }


def _environment() -> Environment:
    env = Environment(
        # beside this module: pyproject's package-data ships "*.j2" of the package folder
        loader=FileSystemLoader(Path(__file__).parent),
        autoescape=select_autoescape(["html", "html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, fmt="{:.3f}": "–" if v is None else fmt.format(v)
    return env


def render(settings: AlertingSettings, report: WeeklyReport) -> Rendered:
    charts = charts_of(report)
    cids = {name: make_msgid(domain="tagwatch")[1:-1] for name in charts}
    env = _environment()
    firing = sum(a.episodes for a in report.alerts or [])
    subject = (
        f"[tagwatch] Weekly summary {report.start:%Y-%m-%d} to {report.end:%Y-%m-%d}: "
        f"{firing} alert episode(s)"
        + (f", {len(report.missing)} section(s) missing" if report.missing else "")
    )
    context = {
        "r": report,
        "s": settings,
        "subject": subject,
        "titles": PROBLEM_TITLES,
        "chart_names": list(charts),
    }
    html = env.get_template("weekly.html.j2")
    return Rendered(
        subject=subject,
        text=env.get_template("weekly.txt.j2").render(**context),
        html_email=html.render(**context, src={n: f"cid:{c}" for n, c in cids.items()}),
        html_file=html.render(
            **context,
            src={
                n: "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                for n, png in charts.items()
            },
        ),
        charts={cids[n]: png for n, png in charts.items()},
    )


def build_message(settings: AlertingSettings, rendered: Rendered) -> EmailMessage:
    # headers are not folded: a folded Subject shows in some clients with a leading space
    msg = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    msg["Subject"] = rendered.subject
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(settings.weekly_recipients)
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html_email, subtype="html")
    html_part = msg.get_body(preferencelist=("html",))
    assert isinstance(html_part, EmailMessage)
    for cid, png in rendered.charts.items():
        html_part.add_related(png, "image", "png", cid=f"<{cid}>", filename=f"{cid}.png")
    return msg


def write_report(settings: AlertingSettings, report: WeeklyReport, rendered: Rendered) -> Path:
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / f"{report.end:%Y-%m-%d}.html"
    path.write_text(rendered.html_file, encoding="utf-8")
    path.with_suffix(".txt").write_text(rendered.text, encoding="utf-8")
    # dated reports quote stored questions: kept as long as their text (TAGWATCH_RETENTION_DAYS)
    prune_reports(settings.reports_dir, settings.retention_days, report.end.date())
    return path


# ---------------------------------------------------------------- the job


def open_existing_store(settings: AlertingSettings) -> PredictionStore | None:
    """The prediction store, or None when its SQLite file does not exist (never create one)."""
    url = settings.store_url
    if url.startswith("sqlite:///") or "://" not in url:
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            return None
    return open_store(url, readonly=True)  # a reader: never writes, never creates


def run_weekly(
    settings: AlertingSettings,
    metrics: WeeklyMetrics,
    end: datetime | None = None,
    send: bool = True,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """One weekly summary: collect, render, write the file, email it. Raises on failure."""
    t0 = time.monotonic()
    metrics.runs.inc()
    try:
        end = end or datetime.now(UTC)
        store = open_existing_store(settings)
        try:
            report = collect(
                settings,
                end,
                PrometheusClient(settings.prometheus_url, settings.prometheus_timeout_seconds),
                store,
            )
        finally:
            if store is not None:
                store.close()
        metrics.missing_sections.set(len(report.missing))
        for section, reason in report.missing.items():
            log.warning("weekly summary: %s missing: %s", section, reason)
        rendered = render(settings, report)
        path = write_report(settings, report, rendered)
        log.info("weekly summary written to %s", path)
        if send:
            attempts = send_email(settings, build_message(settings, rendered), sleep=sleep)
            metrics.emails_sent.inc()
            log.info(
                "weekly summary sent to %s (%d attempt(s))",
                ", ".join(settings.weekly_recipients), attempts,
            )  # fmt: skip
        metrics.last_success.set(time.time())
        return path
    except Exception:
        metrics.failures.inc()
        raise
    finally:
        metrics.last_run_duration.set(time.monotonic() - t0)
